"""Files that ship inside the installed package (presets, icons, style, the demo model)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def resource(*parts: str):
    """A Traversable under studio/resources/; works from a wheel as well as a checkout."""
    node = resources.files("studio") / "resources"
    for part in parts:
        node = node / part
    return node


def demo_model_path() -> Path | None:
    """The bundled demo model's folder, or None where it is not installed."""
    path = Path(str(resource("demo_model")))
    return path if (path / "config.json").exists() else None
