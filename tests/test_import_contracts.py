"""The layering of docs/ARCHITECTURE.md, checked on the source: every ``import`` statement of a
package (module level or inside a function) against the packages it must not reach."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# (package whose modules are checked, forbidden module prefixes, why)
CONTRACTS = (
    ("core", ("app", "tests"), "the library knows no GUI and no test suite"),
    ("core.engine", ("core.training", "core.bench", "core.cli"), "engine: models + checkpoints only"),
    ("core.models", ("core.engine", "core.training", "core.bench"), "networks know nothing that runs them"),
    ("core.geometry", ("core.models", "core.engine", "core.training"), "geometry sits below the networks"),
    ("core.render", ("core.synth",), "overlays do not depend on the synthetic-data generator"),
)


def imported_modules(source: str, module: str) -> set[str]:
    """Absolute names of every module ``source`` (the text of ``module``) imports."""
    out = set()
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def modules_of(package: str):
    folder = REPO / package.replace(".", "/")
    for path in sorted(folder.rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        yield name.removesuffix(".__init__"), path.read_text()


def violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for module, source in modules_of(package):
        for target in sorted(imported_modules(source, module)):
            if any(target == f or target.startswith(f + ".") for f in forbidden):
                found.append(f"{module} imports {target}")
    return found


@pytest.mark.parametrize("package, forbidden, why", CONTRACTS, ids=[c[0] for c in CONTRACTS])
def test_import_contract(package, forbidden, why):
    assert list(modules_of(package)), f"no modules under {package}"
    assert violations(package, forbidden) == [], why


def test_the_checker_sees_function_level_and_relative_imports():
    source = "def f():\n    from tests.golden import load\nfrom ..training import recipes\n"
    found = imported_modules(source, "core.engine.backends")
    assert {"tests.golden", "core.training", "core.training.recipes"} <= found
