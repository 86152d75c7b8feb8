"""The house rule of docs/ARCHITECTURE.md, checked on the source: no function in ``core`` or
``app`` is over 60 lines unless its docstring gives a one-line reason (a line ``Long: why``)."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 60
REASON_PREFIX = "Long:"


def long_functions_without_reason(source: str, filename: str) -> list[str]:
    """``file:line name (N lines)`` for each function of ``source`` longer than MAX_LINES
    (from its ``def`` line to its last line) whose docstring has no ``Long:`` line."""
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        length = node.end_lineno - node.lineno + 1
        if length <= MAX_LINES:
            continue
        doc = ast.get_docstring(node) or ""
        if not any(line.strip().startswith(REASON_PREFIX) for line in doc.splitlines()):
            found.append(f"{filename}:{node.lineno} {node.name} ({length} lines)")
    return found


@pytest.mark.parametrize("package", ["core", "app"])
def test_no_long_function_without_a_reason(package):
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"no modules under {package}"
    found = []
    for path in files:
        found += long_functions_without_reason(path.read_text(), str(path.relative_to(REPO)))
    assert found == [], "functions over 60 lines need a 'Long: <why>' line in their docstring"


def test_the_checker_counts_lines_and_reads_the_reason():
    body = "".join(f"    x{i} = {i}\n" for i in range(59))
    fits = "def fits():\n" + body  # 60 lines with the def line
    too_long = "def too_long():\n    y = 0\n" + body  # 61 lines
    excused = 'def excused():\n    """Does a lot.\n\n    Long: one table written out."""\n' + body
    nested = "class C:\n    def method(self):\n        y = 0\n" + body.replace("    ", "        ")
    found = long_functions_without_reason(fits + too_long + excused + nested, "m.py")
    assert [entry.split()[1] for entry in found] == ["too_long", "method"]
    assert "m.py:61 too_long (61 lines)" in found
