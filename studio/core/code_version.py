"""What a stored result's key says about the code that computed it.

The rule for every cache and resume key in the studio (the resume record of a
conversion, the reference-logits cache, the calibration cache): a stored
result is reused only when everything it is a function of is the same. The
key therefore holds

1. the inputs: the source's identity and every setting (each key adds its own);
2. the code that computed it: the versions of the studio, mlx and mlx-lm, and
   a digest of the source files of the studio modules that compute it
   (`code_version(scope)`, each key naming its scope). Not the studio's version
   alone: it stays 0.1.0 through every commit that changes the converter, and a
   hand-bumped constant is forgotten the one time it matters. The digest may
   also change for an edit that changes nothing (a comment): the result is then
   computed again, which is safe; the other way round is not;
3. the layout of the stored files, where a reader depends on it (the logits
   cache's `FORMAT_VERSION`), so an old file is recognised as old.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
from pathlib import Path

from studio import __version__

LIBRARIES = ("mlx", "mlx-lm")


def _library_versions() -> str:
    parts = []
    for name in LIBRARIES:
        try:
            parts.append(f"{name}={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{name}=?")
    return ";".join(parts)


def source_files(module: str) -> list[tuple[str, Path]]:
    """(name, path) of the .py files of a module, or of every module under a package."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"no module {module!r}")
    origin = Path(spec.origin)
    if spec.submodule_search_locations:
        return [(p.relative_to(origin.parent).as_posix(), p) for p in sorted(origin.parent.rglob("*.py"))]
    return [(origin.name, origin)]


@functools.lru_cache(maxsize=None)
def code_version(scope: tuple[str, ...]) -> str:
    """A digest of the studio, mlx and mlx-lm versions and of the source of the modules in `scope`."""
    h = hashlib.sha256(f"studio={__version__};{_library_versions()}".encode())
    for module in scope:
        for name, path in source_files(module):
            h.update(f"\0{module}:{name}\0".encode())
            h.update(path.read_bytes())
    return h.hexdigest()
