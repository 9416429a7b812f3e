"""The learned method's output on disk: each unit's stock MLX tensors, one `.npy` file per tensor.

    store = UnitStore(folder); store.put(path, [packed, scales, biases]); store.finish(meta)
    UnitStore.open(folder) -> store or None; store.rows(path, first, stop) -> [mx arrays]

The streamed pass learns one decoder layer at a time and must not keep the
model's quantized weights in memory until the conversion asks for them, so
each unit's tensors go to disk as soon as its layer is done. `.npy` files are
read memory-mapped: the converter's chunk of rows [first, stop) costs only
those rows. bfloat16 is stored as its 16 bits (numpy has no bfloat16) with the
dtype in the manifest. The manifest is written last: a folder without one is
an interrupted pass and is never read.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from studio.core.atomic_write import write_text_atomic

MANIFEST = "manifest.json"


def _mx():
    import mlx.core as mx

    return mx


def _bits(array) -> tuple[np.ndarray, str]:
    """An MLX array's bytes as numpy (bfloat16 as uint16) and its MLX dtype's name."""
    mx = _mx()
    name = str(array.dtype).rpartition(".")[2]
    if array.dtype == mx.bfloat16:
        return np.asarray(array.view(mx.uint16)), name
    return np.asarray(array), name


def _from_bits(values: np.ndarray, name: str):
    mx = _mx()
    array = mx.array(np.ascontiguousarray(values))
    return array.view(mx.bfloat16) if name == "bfloat16" else array


class UnitStore:
    def __init__(self, folder: Path, manifest: dict | None = None):
        self.folder = Path(folder)
        self.manifest = manifest or {"units": {}, "meta": {}}

    @classmethod
    def create(cls, folder: Path) -> "UnitStore":
        folder = Path(folder)
        if folder.exists():
            shutil.rmtree(folder)  # an interrupted earlier pass: nothing in it is trusted
        folder.mkdir(parents=True)
        return cls(folder)

    @classmethod
    def open(cls, folder: Path) -> "UnitStore | None":
        try:
            manifest = json.loads((Path(folder) / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        return cls(folder, manifest)

    @property
    def meta(self) -> dict:
        return self.manifest["meta"]

    def __contains__(self, path: str) -> bool:
        return path in self.manifest["units"]

    def put(self, path: str, tensors) -> None:
        stem = hashlib.sha1(path.encode()).hexdigest()[:20]
        dtypes = []
        for i, tensor in enumerate(tensors):
            values, name = _bits(tensor)
            np.save(self.folder / f"{stem}.{i}.npy", values)
            dtypes.append(name)
        self.manifest["units"][path] = {"stem": stem, "dtypes": dtypes}

    def rows(self, path: str, first: int, stop: int) -> list:
        """The unit's tensors for rows (or experts) [first, stop)."""
        entry = self.manifest["units"][path]
        out = []
        for i, name in enumerate(entry["dtypes"]):
            values = np.load(self.folder / f"{entry['stem']}.{i}.npy", mmap_mode="r")
            out.append(_from_bits(values[first:stop], name))
        return out

    def finish(self, meta: dict) -> None:
        self.manifest["meta"] = meta
        write_text_atomic(self.folder / MANIFEST, json.dumps(self.manifest))
