"""The core must import and run without Qt: the command line and the tests depend on it."""

import ast
import pathlib
import subprocess
import sys

CORE = pathlib.Path(__file__).resolve().parents[1] / "studio" / "core"
QT = ("PySide6", "PyQt5", "PyQt6", "pyqtgraph")
FORBIDDEN = (*QT, "studio.views", "studio.worker", "studio.chat", "studio.policy_editor", "studio.main",
             "studio.settings", "studio.commands")

# Run in a fresh interpreter where importing any Qt binding fails: import every core module,
# then open a model and estimate it, as the command line does.
_PROBE = """
import importlib, pkgutil, sys
for name in {qt!r}:
    sys.modules[name] = None  # `import PySide6` now raises ImportError
import studio.core
modules = [m.name for m in pkgutil.walk_packages(studio.core.__path__, "studio.core.")]
for name in modules:
    importlib.import_module(name)
from studio.core.project import Project
project = Project.open(sys.argv[1], "config-i")
assert project.estimate.total_bytes > 0
outside = sorted(m for m in sys.modules if m.startswith("studio.") and not m.startswith("studio.core"))
print(" ".join(modules))
print(" ".join(outside))
"""


def _imports(path: pathlib.Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_core_imports_and_estimates_with_qt_unavailable(tiny_model):
    result = subprocess.run([sys.executable, "-c", _PROBE.format(qt=QT), str(tiny_model("minimax_m3_vl"))],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    imported, outside = result.stdout.split("\n")[:2]
    files = {".".join(("studio", "core", *p.relative_to(CORE).with_suffix("").parts)).removesuffix(".__init__")
             for p in CORE.rglob("*.py")}
    assert set(imported.split()) == files - {"studio.core"}  # every module of the core, packages included
    assert outside == ""  # and nothing outside it


def test_no_qt_import_statement_in_core():
    # Also catches imports inside functions that the probe above never calls.
    files = list(CORE.rglob("*.py"))
    offenders = [f"{path.name}: {name}" for path in files for name in _imports(path) if name.startswith(FORBIDDEN)]
    assert files and offenders == []
