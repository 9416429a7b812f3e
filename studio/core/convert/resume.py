"""The resume record: which shards of which conversion are complete in `.OUT.partial`.

A rerun of the same conversion (same policy, source files, layout and the
code that writes them: the fingerprint) keeps the shards the record lists whose size, header
and xxh3-128 checksum (taken when the shard was sealed) are still the same, and
redoes the rest. The record stays until the output is in place, so a run
killed while finishing resumes without recomputing anything.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from pathlib import Path

from studio.core.atomic_write import write_text_atomic
from studio.core.checksum import DIGEST, file_digest
from studio.core.code_version import code_version
from studio.core.convert import chunks
from studio.core.policy.plan import Plan
from studio.core.convert.shard_layout import Layout, ShardSpec

RECORD_NAME = ".configi-convert.json"
RECORD_BYTES = 64 * 2**20
MARKER_NAME = "CONVERSION_INCOMPLETE.txt"


class Record:
    """Which shards of which plan are complete, kept in the partial folder, with the
    error sums of their units (a resumed shard is not recomputed, so its sums are kept here)."""

    def __init__(self, folder: Path, fingerprint: str):
        self.path = folder / RECORD_NAME
        self.fingerprint = fingerprint
        self.done: dict[str, dict] = {}  # shard file name -> {"bytes": n, DIGEST: hex digest}
        self.errors: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, folder: Path, fingerprint: str) -> "Record":
        """The record of an earlier run of the same conversion, or an empty one (any damage: empty)."""
        record = cls(folder, fingerprint)
        try:
            data = json.loads(record.path.read_bytes()[:RECORD_BYTES + 1]) \
                if record.path.is_file() and record.path.stat().st_size <= RECORD_BYTES else None
        except (OSError, ValueError, RecursionError):
            return record
        if not isinstance(data, dict) or data.get("fingerprint") != fingerprint:
            return record
        shards, errors = data.get("shards"), data.get("errors")
        if isinstance(shards, dict):
            record.done = {k: v for k, v in shards.items() if isinstance(v, dict) and type(v.get("bytes")) is int
                           and isinstance(v.get(DIGEST), str)}
        if isinstance(errors, dict):
            record.errors = {k: [float(x) for x in v] for k, v in errors.items()
                             if isinstance(v, list) and len(v) == 2 and all(type(x) in (int, float) for x in v)}
        return record

    def save(self) -> None:
        write_text_atomic(self.path, json.dumps({"fingerprint": self.fingerprint, "shards": self.done,
                                                 "errors": self.errors}, indent=1))

    def mark_done(self, shard: ShardSpec, digest: str, errors: dict[str, tuple[float, float]] | None = None) -> None:
        with self._lock:
            self.done[shard.filename] = {"bytes": shard.file_bytes, DIGEST: digest}
            self.errors.update({k: list(v) for k, v in (errors or {}).items()})
            self.save()


# The code a converted shard (and its error sums, kept in the record) is a function of; see
# studio.core.code_version for the rule every cache key follows.
CODE = ("studio.core.convert", "studio.core.model", "studio.core.policy", "studio.core.quant_error",
        "studio.core.calibration.quantizer", "studio.core.calibration.gptq", "studio.core.calibration.convert_hook")


def fingerprint(plan: Plan, layout: Layout, quantizer: str = "") -> str:
    """Policy + source identity + output layout + the code that writes it: a resume only reuses
    shards of the same conversion, by the same code."""
    inventory = plan.inventory
    h = hashlib.sha256(code_version(CODE).encode())
    h.update(json.dumps(plan.policy.to_dict(), sort_keys=True).encode())
    h.update(json.dumps(inventory.config, sort_keys=True).encode())
    h.update(inventory.source.identity(inventory.shards).encode())
    h.update(f"{plan.float_dtype}:{chunks.CHUNK_ELEMENTS}".encode())
    h.update(layout.digest().encode())
    h.update(quantizer.encode())  # a calibrated conversion never resumes a plain one's shards
    return h.hexdigest()


def shard_is_whole(path: Path, spec: ShardSpec, entry: dict) -> bool:
    """The shard as the record says it was sealed: planned size and header, same checksum."""
    try:
        if not path.is_file() or path.stat().st_size != spec.file_bytes or entry.get("bytes") != spec.file_bytes:
            return False
        with open(path, "rb") as f:
            if f.read(len(spec.header)) != spec.header:
                return False
        return file_digest(path) == entry.get(DIGEST)
    except OSError:
        return False


def prepare_partial(partial: Path, fingerprint: str, layout: Layout, plan: Plan) -> tuple[Record, set[int]]:
    """Keep the verified shards of an earlier run of the same conversion; clear everything else."""
    partial.mkdir(parents=True, exist_ok=True)
    record = Record.load(partial, fingerprint)
    done: set[int] = set()
    keep = {RECORD_NAME, MARKER_NAME}
    for index, spec in enumerate(layout.shards):
        entry = record.done.get(spec.filename)
        if entry is not None and shard_is_whole(partial / spec.filename, spec, entry):
            done.add(index)
            keep.add(spec.filename)
    record.done = {layout.shards[i].filename: record.done[layout.shards[i].filename] for i in done}
    kept_units = {plan.units[u].path for i in done for u in layout.shards[i].units}
    record.errors = {k: v for k, v in record.errors.items() if k in kept_units}
    for path in partial.iterdir():
        if path.name not in keep:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    (partial / MARKER_NAME).write_text(
        "This folder is an unfinished Config-I Studio conversion. Run the same conversion again to resume it;\n"
        "it becomes the output folder only when every shard is written and checked.\n"
    )
    record.save()
    return record, done
