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


def suggested_output(source: Path, policy_name: str = "config-i", *, name: str | None = None,
                     remote: bool = False) -> Path:
    """Where a conversion of `source` goes unless the user says otherwise.

    Beside the source, except for sources the user cannot or should not write
    beside (the demo model inside the installed package, a read-only folder):
    those go to a "Config-I Studio" folder in the home directory, as do Hub
    repos (`remote`, named `name`), whose local folder is the download cache.
    """
    import os
    import re

    source = Path(source).resolve()
    slug = re.sub(r"[^a-z0-9]+", "-", policy_name.lower()).strip("-") or "custom"
    name = f"{name or source.name}-{slug}-mlx"
    bundled = Path(str(resource())).resolve()
    if remote or bundled in source.parents or not os.access(source.parent, os.W_OK):
        return Path.home() / "Config-I Studio" / name
    return source.parent / name
