"""The core must import and run without Qt: the command line and the tests depend on it."""

import ast
import pathlib

CORE = pathlib.Path(__file__).resolve().parents[1] / "studio" / "core"
FORBIDDEN = ("PySide6", "PyQt5", "PyQt6", "pyqtgraph", "studio.views", "studio.worker",
             "studio.chat", "studio.policy_editor", "studio.main")


def _imports(path: pathlib.Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_core_has_modules():
    assert len(list(CORE.glob("*.py"))) > 3


def test_no_qt_in_core():
    offenders = [
        f"{path.name}: {name}"
        for path in CORE.rglob("*.py")
        for name in _imports(path)
        if name.startswith(FORBIDDEN)
    ]
    assert offenders == []
