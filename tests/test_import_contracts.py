"""The layering of docs/ARCHITECTURE.md, checked on the source: every ``import`` statement of a
package (module level or inside a function) against the packages it must not reach, and the
document's layer picture against the imports as they are."""

import ast
import re
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


# --- the layer picture of docs/ARCHITECTURE.md, checked against the imports both ways ---------
BASE = ("core.errors", "core.types", "core.hand")  # every package may import these
PACKAGE_COLUMN = 15  # where the picture's package names start; deeper indentation continues a line


def package_of(module: str) -> str | None:
    """``core.<first part>`` or ``app`` for a module of ours; None for anything else."""
    parts = module.split(".")
    if parts[0] == "core" and len(parts) > 1:
        return f"core.{parts[1]}"
    return "app" if parts[0] == "app" else None


def actual_dependencies() -> dict[str, set[str]]:
    """Each of our packages -> the other packages of ours it imports (base included)."""
    found: dict[str, set[str]] = {}
    for top in ("core", "app"):
        for module, source in modules_of(top):
            package = package_of(module)
            if package is None:  # core/__init__.py
                continue
            targets = {package_of(t) for t in imported_modules(source, module)}
            found.setdefault(package, set()).update(t for t in targets if t and t != package)
    return found


def parse_layer_picture(text: str) -> tuple[dict[str, set[str] | None], dict[str, int]]:
    """The picture after the heading "Layers and import contracts": package -> the packages its
    arrow lists (None: "any core package"), and package -> its layer's rank (0 = top)."""
    block = text.split("## Layers and import contracts", 1)[1].split("```", 2)[1]
    lines = [line for line in block.splitlines()[1:] if line.strip() and not line.startswith("---")]
    arrows: dict[str, str] = {}
    ranks: dict[str, int] = {}
    package, rank = None, -1
    for line in lines[1:]:  # after the column titles
        if line[:PACKAGE_COLUMN].strip():
            rank += 1  # a new layer label
        if line[: PACKAGE_COLUMN + 2].strip() == "":  # continues the previous arrow
            arrows[package] += " " + line.strip()
            continue
        package, _, rest = line[PACKAGE_COLUMN:].strip().partition(" ")
        ranks[package] = rank
        if rest.strip().startswith("->"):
            arrows[package] = rest.strip()[2:]
    listed: dict[str, set[str] | None] = {}
    for package, rest in arrows.items():
        rest = re.sub(r"\([^)]*\)", "", rest)  # notes in parentheses name modules, not arrows
        named = set(re.findall(r"\b(?:core\.\w+|app)\b", rest))
        listed[package] = None if "any core package" in rest else named
    return listed, ranks


def test_the_layer_picture_lists_every_import_and_no_other():
    listed, _ = parse_layer_picture((REPO / "docs" / "ARCHITECTURE.md").read_text())
    actual = actual_dependencies()
    assert set(listed) == set(actual), "every package of core and app has one line in the picture"
    for package, targets in listed.items():
        if targets is None:
            continue
        if package in BASE:
            assert actual[package] <= set(BASE), f"{package} imports more than the base"
            continue
        assert actual[package] - set(BASE) == targets, f"the picture's arrow of {package}"


def test_the_layer_picture_points_down_only():
    listed, ranks = parse_layer_picture((REPO / "docs" / "ARCHITECTURE.md").read_text())
    for package, targets in listed.items():
        for target in targets or ():
            assert ranks[target] >= ranks[package], f"{package} -> {target} points up the layers"


def test_the_picture_parser_reads_layers_notes_and_continuations():
    text = (
        "## Layers and import contracts\n```\nlayer          package  imports\n"
        "-------------  -------  -------\n"
        "top            core.a  -> core.b (core.c inside a note),\n"
        "                          core.d\n"
        "               core.x  -> any core package\n"
        "bottom         core.b  -> (the base only)\n"
        "               core.d  -> core.b\n```\n"
    )
    listed, ranks = parse_layer_picture(text)
    assert listed == {"core.a": {"core.b", "core.d"}, "core.x": None, "core.b": set(), "core.d": {"core.b"}}
    assert ranks == {"core.a": 0, "core.x": 0, "core.b": 1, "core.d": 1}
