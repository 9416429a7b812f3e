"""Every module of the package sits in one layer of the import contract, so `lint-imports` sees it.

The layers contract in pyproject.toml names the modules of studio.views one by one
(the window modules sit above the panels that use the other views); a new module
left out of it would escape the check, so this test names it.
"""

from __future__ import annotations

import pkgutil
import re

import studio
from importlinter.api import read_configuration


def _layer_modules() -> set[str]:
    (layers,) = [c["layers"] for c in read_configuration()["contracts_options"] if c["type"] == "layers"]
    return {part.strip() for layer in layers for part in re.split(r"[|:]", layer) if part.strip()}


def _covered(module: str, named: set[str]) -> bool:
    return any(module == n or module.startswith(n + ".") for n in named)


def test_every_module_is_in_a_layer():
    named = _layer_modules()
    found = list(pkgutil.walk_packages(studio.__path__, "studio."))
    modules = [m.name for m in found]
    assert "studio.views.palette" in modules and "studio.core.policy.grid" in modules
    # A package whose modules are named one by one (studio.views) is covered by them.
    split = {m.name for m in found if m.ispkg and any(n.startswith(m.name + ".") for n in named)}
    missing = [m for m in modules if not _covered(m, named) and m not in split]
    assert missing == [], f"add these to the layers contract in pyproject.toml: {missing}"


def test_every_named_module_exists():
    modules = {m.name for m in pkgutil.walk_packages(studio.__path__, "studio.")}
    assert sorted(_layer_modules() - modules) == []
