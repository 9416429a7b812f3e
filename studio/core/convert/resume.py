"""The resume record: which shards of which conversion are complete in `.OUT.partial`.

A rerun of the same conversion (same policy, source files, layout and studio
version: the fingerprint) keeps the shards the record lists whose size and
header are still the plan's, and redoes the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path

from studio import __version__
from studio.core.convert import chunks
from studio.core.plan import Plan
from studio.core.shard_layout import Layout, ShardSpec

RECORD_NAME = ".configi-convert.json"
MARKER_NAME = "CONVERSION_INCOMPLETE.txt"


class Record:
    """Which shards of which plan are complete, kept in the partial folder, with the
    error sums of their units (a resumed shard is not recomputed, so its sums are kept here)."""

    def __init__(self, folder: Path, fingerprint: str):
        self.path = folder / RECORD_NAME
        self.fingerprint = fingerprint
        self.done: dict[str, int] = {}
        self.errors: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, folder: Path, fingerprint: str) -> "Record":
        record = cls(folder, fingerprint)
        try:
            data = json.loads(record.path.read_text())
        except (OSError, ValueError):
            return record
        if isinstance(data, dict) and data.get("fingerprint") == fingerprint and isinstance(data.get("shards"), dict):
            record.done = {str(k): int(v) for k, v in data["shards"].items()}
            errors = data.get("errors")
            if isinstance(errors, dict):
                record.errors = {str(k): [float(x) for x in v] for k, v in errors.items()
                                 if isinstance(v, list) and len(v) == 2}
        return record

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"fingerprint": self.fingerprint, "shards": self.done, "errors": self.errors},
                                  indent=1))
        os.replace(tmp, self.path)

    def mark_done(self, shard: ShardSpec, errors: dict[str, tuple[float, float]] | None = None) -> None:
        with self._lock:
            self.done[shard.filename] = shard.file_bytes
            self.errors.update({k: list(v) for k, v in (errors or {}).items()})
            self.save()


def fingerprint(plan: Plan, layout: Layout) -> str:
    """Policy + source identity + output layout: a resume only reuses shards of the same conversion."""
    inventory = plan.inventory
    h = hashlib.sha256()
    h.update(json.dumps(plan.policy.to_dict(), sort_keys=True).encode())
    h.update(json.dumps(inventory.config, sort_keys=True).encode())
    h.update(inventory.source.identity(inventory.shards).encode())
    h.update(f"{__version__}:{plan.float_dtype}:{chunks.CHUNK_ELEMENTS}".encode())
    h.update(layout.digest().encode())
    return h.hexdigest()


def shard_is_whole(path: Path, spec: ShardSpec) -> bool:
    try:
        if path.stat().st_size != spec.file_bytes:
            return False
        with open(path, "rb") as f:
            return f.read(len(spec.header)) == spec.header
    except OSError:
        return False


def prepare_partial(partial: Path, fingerprint: str, layout: Layout, plan: Plan) -> tuple[Record, set[int]]:
    """Keep the verified shards of an earlier run of the same conversion; clear everything else."""
    partial.mkdir(parents=True, exist_ok=True)
    record = Record.load(partial, fingerprint)
    done: set[int] = set()
    keep = {RECORD_NAME, MARKER_NAME}
    for index, spec in enumerate(layout.shards):
        if spec.filename in record.done and shard_is_whole(partial / spec.filename, spec):
            done.add(index)
            keep.add(spec.filename)
    record.done = {layout.shards[i].filename: layout.shards[i].file_bytes for i in done}
    kept_units = {plan.units[u].path for i in done for u in layout.shards[i].units}
    record.errors = {k: v for k, v in record.errors.items() if k in kept_units}
    for path in partial.iterdir():
        if path.name not in keep:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    (partial / MARKER_NAME).write_text(
        "This folder is an unfinished Config-I Studio conversion. Run the same conversion again to resume it;\n"
        "it becomes the output folder only when every shard is written and checked.\n"
    )
    record.save()
    return record, done
