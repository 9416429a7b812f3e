"""What pyproject.toml declares is what the code needs: every third-party import, at a version that has it."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent

# The oldest huggingface_hub with each thing the studio uses from it (release notes; the first one
# checked by installing 1.30.0 and 1.31.0 and importing it).
HUB_FLOORS = {
    # hub/ranged.py and hub/refs.py catch transport errors from the client's own HTTP module
    # (httpx in 1.x, httpx2 from 2.0); 1.31.0 is the first release that exports it.
    "huggingface_hub.utils.httpx": "1.31.0",
    # get_session() returns an httpx client (.stream, .iter_raw): the 1.0 switch from requests.
    "httpx session": "1.0.0",
    # The sentences tell people to run `hf auth login`, the CLI named `hf` since 0.34.
    "hf auth login": "0.34.0",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_norm(r.name): r for r in map(Requirement, project["dependencies"])}


def _imported_top_levels() -> set[str]:
    names = set()
    for path in (ROOT / "studio").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"studio", "__future__"}


def test_every_third_party_import_is_declared():
    declared = set(_declared())
    owners = importlib.metadata.packages_distributions()
    undeclared = {name: owners.get(name) for name in _imported_top_levels()
                  if not declared & {_norm(d) for d in owners.get(name, [name])}}
    assert not undeclared, f"imported but not in pyproject's dependencies: {undeclared}"


def test_huggingface_hub_floor_has_what_the_code_uses():
    spec = _declared()["huggingface-hub"].specifier
    floors = [Version(s.version) for s in spec if s.operator in (">=", "==", "~=")]
    assert floors, "huggingface-hub needs a lower bound"
    needed = max(map(Version, HUB_FLOORS.values()))
    assert min(floors) >= needed, f"huggingface-hub>={min(floors)} declared; the code needs >={needed}"
    from huggingface_hub import get_session
    from huggingface_hub.utils import httpx

    assert isinstance(get_session(), httpx.Client)  # the module ranged.py catches errors from
