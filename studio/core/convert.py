"""Convert a planned model to an MLX folder, streaming, in bounded memory, resumably.

    convert(project, out, force=False, progress=None, cancel=None, max_shard_bytes=5e9)

How it goes:
1. Lay out every output shard from the plan (names, shapes, dtypes, offsets);
   nothing is computed yet, so the headers are written first.
2. In `.OUT.partial` beside the destination, keep the shards a previous run
   finished for the same plan (resume) and redo the rest.
3. Three threads, joined by queues of two: a reader fetches the byte ranges of
   the next chunk's sources, the caller's thread dequantizes, transforms and
   quantizes it with MLX (one small `mx.eval` per chunk), a writer puts the
   bytes at their offsets. A chunk is a slice of rows (experts, for stacked
   units) of one unit; quantization groups run along the last axis, so a
   chunk's bytes are exactly the rows' bytes of the whole.
4. Check the written headers against the plan, add config.json, tokenizer
   files, README.md, the policy and `quant_errors.json`, then move the folder
   into place.

Every 8th row of each quantized chunk is also dequantized again and compared
with the float values it came from, in the same `mx.eval`: per unit, the sums
of squared error and of squares give the relative error of those rows, a
close estimate of the whole tensor's (`quant_errors.json`) at about a third
more wall time on a CPU.

A cancel, an error or a kill leaves only the `.partial` folder (no config.json,
and a marker file saying it is unfinished); the next run resumes from it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import queue
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from studio import __version__
from studio.core.quant_error import error_map as quant_errors
from studio.core.cancel import CancelToken  # noqa: F401  (re-exported for callers)
from studio.core.dequantize import FP8_BLOCK, SourceReader, SourceRows
from studio.core.errors import StudioError
from studio.core.formatting import human_bytes
from studio.core.inventory import read_header
from studio.core.model_card import model_card
from studio.core.output_config import copy_extra_files, output_config
from studio.core.plan import Decision, Plan
from studio.core.policy import OWN_POLICY_FILE
from studio.core.shard_layout import INDEX_NAME, Layout, ShardSpec, plan_layout
from studio.core.quant_error.round_trip import round_trip_sums
from studio.core.unit_source import read_unit_rows, unit_values, whole_only
from studio.core.unit import Unit

# Values per chunk: about 64 MB as float32. Small enough that every chunk is a
# short piece of GPU work on Metal and memory stays flat; big enough that the
# per-chunk overhead does not show.
CHUNK_ELEMENTS = 16 * 2**20
RECORD_NAME = ".configi-convert.json"
ERROR_ROW_STRIDE = 8  # quant_errors.json measures every 8th output row of each matrix
MARKER_NAME = "CONVERSION_INCOMPLETE.txt"
PROGRESS_INTERVAL_S = 0.1
_END = object()


class ConversionCancelled(StudioError):
    """The user cancelled; the partial folder stays for a later resume."""


@dataclass
class Progress:
    unit: str
    units_done: int
    units_total: int
    bytes_done: int
    bytes_total: int
    bytes_per_s: float
    eta_s: float | None
    phase: str  # "checking" | "writing" | "finishing"

    @property
    def fraction(self) -> float:
        return self.bytes_done / self.bytes_total if self.bytes_total else 1.0


@dataclass
class ConvertResult:
    path: Path
    bytes_written: int
    seconds: float
    resumed_shards: int


# --------------------------------------------------------------------------- work items


@dataclass
class _Chunk:
    unit_index: int
    first: int  # rows [first, stop) along the output's first axis
    stop: int
    last: bool  # the unit's last chunk
    closes_shard: int | None = None  # the shard this chunk finishes, if any


def _rows(shape: tuple[int, ...]) -> int:
    return shape[0] if len(shape) >= 2 else 1


def _chunks(plan: Plan, index: int) -> list[tuple[int, int]]:
    unit = plan.units[index]
    if whole_only(unit):
        return [(0, _rows(unit.shape))]
    rows = unit.shape[0]
    per_row = max(1, unit.elements // max(rows, 1))
    step = max(1, CHUNK_ELEMENTS // per_row)
    source = plan.inventory.by_name[unit.sources[0]]
    if unit.transform == "copy" and source.encoding == "fp8" and source.companions:
        step = max(FP8_BLOCK, step // FP8_BLOCK * FP8_BLOCK)  # block scales cover 128 rows
    return [(a, min(rows, a + step)) for a in range(0, rows, step)]


def _work(plan: Plan, layout: Layout, skip_shards: set[int]) -> list[_Chunk]:
    work = []
    for shard_index, shard in enumerate(layout.shards):
        if shard_index in skip_shards:
            continue
        for unit_index in shard.units:
            spans = _chunks(plan, unit_index)
            for n, (a, b) in enumerate(spans):
                work.append(_Chunk(unit_index, a, b, n == len(spans) - 1))
        work[-1].closes_shard = shard_index
    return work


# --------------------------------------------------------------------------- reading


def _raw_copy(unit: Unit, decision: Decision, plan: Plan) -> bool:
    """A kept unit whose bytes are the source's bytes: copied without MLX."""
    if decision.action != "keep" or unit.transform not in ("copy", "stack"):
        return False
    sources = [plan.inventory.by_name[n] for n in unit.sources]
    return all(s.encoding == "float" and s.dtype == decision.dtype for s in sources)


def _read_chunk(reader: SourceReader, plan: Plan, chunk: _Chunk) -> list[SourceRows]:
    return read_unit_rows(reader, plan.inventory, plan.units[chunk.unit_index], chunk.first, chunk.stop)


# --------------------------------------------------------------------------- computing


def _mx_dtype(name: str):
    import mlx.core as mx

    return {"BF16": mx.bfloat16, "F16": mx.float16, "F32": mx.float32}[name]


def _to_numpy(array) -> np.ndarray:
    """An MLX array's bytes as a C-contiguous numpy array (bfloat16 seen as its bits)."""
    import mlx.core as mx

    array = mx.contiguous(array)
    size = array.dtype.size
    as_uint = {1: mx.uint8, 2: mx.uint16, 4: mx.uint32, 8: mx.uint64}[size]
    if array.dtype != as_uint:
        array = array.view(as_uint)
    return np.ascontiguousarray(np.asarray(array))


def _compute(plan: Plan, chunk: _Chunk, parts: list[SourceRows], slots,
             measure: bool = True) -> tuple[list[list[np.ndarray]], tuple[float, float] | None]:
    """The bytes of each of the unit's output tensors for the chunk's rows, in slot order,
    and for a quantized chunk (when `measure`) its (squared error, squares) sums."""
    unit, decision = plan.units[chunk.unit_index], plan.decisions[chunk.unit_index]
    if _raw_copy(unit, decision, plan):
        return [[np.ascontiguousarray(p.data) for p in parts]], None
    import mlx.core as mx

    x = unit_values(unit, parts)
    sums = []
    if decision.action == "quantize":
        outs = list(mx.quantize(x.astype(_mx_dtype(decision.dtype)), decision.group_size, decision.bits,
                                mode=decision.mode))
        if measure:
            # Every ERROR_ROW_STRIDE-th output row (counted across the whole unit, so any
            # chunking samples the same rows): dequantizing costs about twice what
            # quantizing does on the CPU, and a strided sample of thousands of rows
            # estimates a tensor's relative error to well under a percent.
            # Per row in float32, then float64 across rows.
            offset = (-chunk.first) % ERROR_ROW_STRIDE if x.ndim == 2 else 0
            if offset < x.shape[-2]:  # a short chunk may hold no sampled row
                sample = [a[..., offset::ERROR_ROW_STRIDE, :] for a in (x, *outs)]
                sums = list(round_trip_sums(sample[0], sample[1:], decision.bits, decision.group_size,
                                            decision.mode, axes=(-1,)))
    else:
        outs = [x.astype(_mx_dtype(decision.dtype))]
    mx.eval(outs + sums)
    arrays = [_to_numpy(o) for o in outs]
    error = (float(np.sum(np.asarray(sums[0], dtype=np.float64))),
             float(np.sum(np.asarray(sums[1], dtype=np.float64)))) if sums else None
    del x, outs, sums
    rows = chunk.stop - chunk.first
    for slot, array in zip(slots, arrays):
        expected = slot.nbytes * rows // _rows(slot.shape)
        if array.nbytes != expected:
            raise RuntimeError(f"{slot.name}: computed {array.nbytes} bytes for rows {chunk.first}-{chunk.stop}, "
                               f"the layout expects {expected}")
    return [[a] for a in arrays], error


# --------------------------------------------------------------------------- threads


class _Pipe:
    """A bounded queue whose put gives up when the pipeline is stopping."""

    def __init__(self, stop: threading.Event, size: int = 2):
        self.queue: queue.Queue = queue.Queue(maxsize=size)
        self.stop = stop

    def put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self):
        while True:
            try:
                return self.queue.get(timeout=0.1)
            except queue.Empty:
                if self.stop.is_set():
                    return _END


class _Writer(threading.Thread):
    """Writes byte pieces at their offsets; seals a shard (fsync + record) when told."""

    def __init__(self, folder: Path, layout: Layout, record: "_Record", pipe: _Pipe, stop: threading.Event):
        super().__init__(name="configi-convert-writer", daemon=True)
        self.folder, self.layout, self.record, self.pipe, self.stop = folder, layout, record, pipe, stop
        self.files: dict[int, object] = {}
        self.bytes_written = 0
        self.error: BaseException | None = None

    def _file(self, shard_index: int):
        f = self.files.get(shard_index)
        if f is None:
            spec = self.layout.shards[shard_index]
            f = open(self.folder / spec.filename, "wb+", buffering=0)
            _write_all(f, 0, memoryview(spec.header))
            f.truncate(spec.file_bytes)
            self.files[shard_index] = f
        return f

    def run(self):
        try:
            while True:
                item = self.pipe.get()
                if item is _END:
                    return
                if item[0] == "write":
                    _, shard_index, offset, array = item
                    _write_all(self._file(shard_index), offset, memoryview(array).cast("B"))
                    self.bytes_written += array.nbytes
                else:  # ("seal", shard_index, {unit path: (err, ref)} of its units)
                    shard_index, errors = item[1], item[2]
                    self._file(shard_index)  # a shard of empty tensors still gets its header
                    f = self.files.pop(shard_index)
                    os.fsync(f.fileno())
                    f.close()
                    self.record.mark_done(self.layout.shards[shard_index], errors)
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc
            self.stop.set()
        finally:
            for f in self.files.values():
                try:
                    f.close()
                except OSError:
                    pass
            self.files.clear()


def _write_all(f, offset: int, data: memoryview) -> None:
    """Write all of `data` at `offset` of an unbuffered file (raw writes may be short)."""
    f.seek(offset)
    while data:
        written = f.write(data)
        if not written:
            raise OSError(errno.EIO, "the file accepted no bytes")
        data = data[written:]


class _Reader(threading.Thread):
    def __init__(self, reader: SourceReader, plan: Plan, work: list[_Chunk], pipe: _Pipe, stop: threading.Event):
        super().__init__(name="configi-convert-reader", daemon=True)
        self.reader, self.plan, self.work, self.pipe, self.stop = reader, plan, work, pipe, stop

    def run(self):
        try:
            for chunk in self.work:
                if self.stop.is_set():
                    return
                if not self.pipe.put((chunk, _read_chunk(self.reader, self.plan, chunk))):
                    return
            self.pipe.put(_END)
        except BaseException as exc:
            self.pipe.put(exc)
        finally:
            self.reader.close()


# --------------------------------------------------------------------------- resume record


class _Record:
    """Which shards of which plan are complete, kept in the partial folder, with the
    error sums of their units (a resumed shard is not recomputed, so its sums are kept here)."""

    def __init__(self, folder: Path, fingerprint: str):
        self.path = folder / RECORD_NAME
        self.fingerprint = fingerprint
        self.done: dict[str, int] = {}
        self.errors: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, folder: Path, fingerprint: str) -> "_Record":
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


def _fingerprint(plan: Plan, layout: Layout) -> str:
    """Policy + source identity + output layout: a resume only reuses shards of the same conversion."""
    inventory = plan.inventory
    h = hashlib.sha256()
    h.update(json.dumps(plan.policy.to_dict(), sort_keys=True).encode())
    h.update(json.dumps(inventory.config, sort_keys=True).encode())
    for name in inventory.shards:
        stat = (inventory.root / name).stat()
        h.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    h.update(f"{__version__}:{plan.float_dtype}:{CHUNK_ELEMENTS}".encode())
    h.update(layout.digest().encode())
    return h.hexdigest()


def _shard_is_whole(path: Path, spec: ShardSpec) -> bool:
    try:
        if path.stat().st_size != spec.file_bytes:
            return False
        with open(path, "rb") as f:
            return f.read(len(spec.header)) == spec.header
    except OSError:
        return False


def _prepare_partial(partial: Path, fingerprint: str, layout: Layout, plan: Plan) -> tuple[_Record, set[int]]:
    """Keep the verified shards of an earlier run of the same conversion; clear everything else."""
    partial.mkdir(parents=True, exist_ok=True)
    record = _Record.load(partial, fingerprint)
    done: set[int] = set()
    keep = {RECORD_NAME, MARKER_NAME}
    for index, spec in enumerate(layout.shards):
        if spec.filename in record.done and _shard_is_whole(partial / spec.filename, spec):
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


# --------------------------------------------------------------------------- checks


def _check_destination(plan: Plan, out: Path, force: bool) -> None:
    source = plan.inventory.root.resolve()
    target = out.resolve()
    if target == source or source.is_relative_to(target) or target.is_relative_to(source):
        raise StudioError(f"the output folder {out} must not be the source model's folder, inside it or around it.")
    if out.exists() and not out.is_dir():
        raise StudioError(f"{out} exists and is not a folder.")
    if out.exists() and not force:
        raise StudioError(f"{out} already exists; choose another folder or replace it with --force.")


def _check_disk(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise StudioError(
            f"not enough free disk space in {folder}: the conversion needs {human_bytes(needed)} more "
            f"and {human_bytes(free)} is free."
        )


def _verify(folder: Path, layout: Layout, expected_bytes: int) -> None:
    """Read back every written header and size; they must be the plan's, to the byte."""
    total = 0
    for spec in layout.shards:
        path = folder / spec.filename
        if path.stat().st_size != spec.file_bytes:
            raise StudioError(f"{spec.filename} holds {path.stat().st_size} bytes, not the {spec.file_bytes} planned.")
        entries = {e.name: e for e in read_header(path)}
        for slot in spec.slots:
            entry = entries.get(slot.name)
            if entry is None or entry.start != slot.offset or entry.nbytes != slot.nbytes or \
                    entry.shape != slot.shape or entry.dtype != slot.dtype:
                raise StudioError(f"{spec.filename}: tensor {slot.name} does not match the plan.")
            total += entry.nbytes
    if total != expected_bytes:
        raise RuntimeError(f"wrote {total} bytes of tensor data, the estimate says {expected_bytes}")


def _disk_error(exc: OSError, folder: Path) -> StudioError:
    if exc.errno == errno.ENOSPC:
        return StudioError(f"the disk holding {folder} is full; free some space and run the conversion again "
                           "to resume.")
    return StudioError(f"cannot write to {folder}: {exc.strerror or exc}.")


# --------------------------------------------------------------------------- the conversion


class _Reporter:
    def __init__(self, callback, units_total: int, bytes_total: int, bytes_resumed: int):
        self.callback = callback
        self.units_total, self.bytes_total, self.bytes_resumed = units_total, bytes_total, bytes_resumed
        self.start = time.monotonic()
        self.last = 0.0

    def __call__(self, unit: str, units_done: int, bytes_done: int, phase: str, force: bool = False) -> None:
        if self.callback is None:
            return
        now = time.monotonic()
        if not force and now - self.last < PROGRESS_INTERVAL_S:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = (bytes_done - self.bytes_resumed) / elapsed
        eta = (self.bytes_total - bytes_done) / rate if rate > 0 else None
        self.callback(Progress(unit, units_done, self.units_total, bytes_done, self.bytes_total, rate, eta, phase))


def convert(project, out: str | Path, *, force: bool = False,
            progress: Callable[[Progress], None] | None = None, cancel: CancelToken | None = None,
            max_shard_bytes: int = 5 * 10**9, measure_errors: bool = True) -> ConvertResult:
    """Write `project`'s plan as an MLX folder at `out`; see the module docstring.

    `measure_errors=False` skips the per-unit error sums (no quant_errors.json)."""
    started = time.monotonic()
    plan: Plan = project.plan
    estimate = project.estimate
    out = Path(out).expanduser().absolute()
    _check_destination(plan, out, force)
    layout = plan_layout(plan, max_shard_bytes)
    if not layout.shards:
        raise StudioError("the policy drops every tensor; there is nothing to write.")
    partial = out.parent / f".{out.name}.partial"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        record, done = _prepare_partial(partial, _fingerprint(plan, layout), layout, plan)
    except OSError as exc:
        raise _disk_error(exc, out.parent) from None

    units_total = len(plan.units)
    resumed_bytes = sum(layout.shards[i].data_bytes for i in done)
    report = _Reporter(progress, units_total, estimate.total_bytes, resumed_bytes)
    units_done = units_total - sum(len(layout.shards[i].units) for i in range(len(layout.shards)) if i not in done)
    report("", units_done, resumed_bytes, "checking", force=True)
    remaining = sum(s.file_bytes for i, s in enumerate(layout.shards) if i not in done)
    _check_disk(partial, remaining + 16 * 2**20)

    stop = threading.Event()
    inbox, outbox = _Pipe(stop), _Pipe(stop)
    work = _work(plan, layout, done)
    reader = _Reader(SourceReader(plan.inventory.root), plan, work, inbox, stop)
    writer = _Writer(partial, layout, record, outbox, stop)
    reader.start()
    writer.start()

    # Per unit path: [sum of squared errors, sum of squares], resumed shards' from the record.
    errors: dict[str, list[float]] = {k: list(v) for k, v in record.errors.items()}

    def send(item) -> None:
        if not outbox.put(item):
            _raise_writer_error(writer, partial)
            raise RuntimeError("the writer stopped")

    try:
        while True:
            if cancel is not None and cancel.cancelled:
                raise ConversionCancelled("conversion cancelled; run it again to resume from the finished shards.")
            item = inbox.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            chunk, parts = item
            slots = layout.slots_by_unit[chunk.unit_index]
            pieces, error = _compute(plan, chunk, parts, slots, measure_errors)
            del parts
            if error is not None:
                sums = errors.setdefault(plan.units[chunk.unit_index].path, [0.0, 0.0])
                sums[0] += error[0]
                sums[1] += error[1]
            shard_index = layout.shard_of_unit[chunk.unit_index]
            for slot, arrays in zip(slots, pieces):
                offset = slot.offset + slot.nbytes * chunk.first // _rows(slot.shape)
                for array in arrays:
                    send(("write", shard_index, offset, array))
                    offset += array.nbytes
            del pieces
            _clear_cache()
            unit = plan.units[chunk.unit_index]
            if chunk.last:
                units_done += 1
            if chunk.closes_shard is not None:
                paths = (plan.units[u].path for u in layout.shards[chunk.closes_shard].units)
                send(("seal", chunk.closes_shard, {p: errors[p] for p in paths if p in errors}))
            report(unit.path, units_done, resumed_bytes + writer.bytes_written, "writing", force=chunk.last)
        send(_END)
        writer.join()
        _raise_writer_error(writer, partial)
    finally:
        stop.set()
        reader.join()
        writer.join()
    _raise_writer_error(writer, partial)
    units_done = units_total  # dropped units are done too
    report("", units_done, estimate.total_bytes, "finishing", force=True)

    try:
        _verify(partial, layout, estimate.total_bytes)
        _finish_folder(project, partial, layout, errors if measure_errors else None)
        _move_into_place(partial, out, force)
    except OSError as exc:
        raise _disk_error(exc, partial) from None
    return ConvertResult(out, layout.data_bytes, time.monotonic() - started, len(done))


def _raise_writer_error(writer: _Writer, folder: Path) -> None:
    error = writer.error
    if error is None:
        return
    if isinstance(error, OSError):
        raise _disk_error(error, folder) from None
    raise error


def _clear_cache() -> None:
    import mlx.core as mx

    mx.clear_cache()


def _finish_folder(project, folder: Path, layout: Layout, errors: dict[str, list[float]] | None) -> None:
    """Everything but the weights; config.json last, so a folder with one is complete."""
    plan = project.plan
    if errors is not None:
        quant_errors.write(folder, plan, {k: (v[0], v[1]) for k, v in errors.items()})
    if len(layout.shards) > 1:
        (folder / INDEX_NAME).write_text(json.dumps(layout.index(), indent=2) + "\n")
    copy_extra_files(plan.inventory.root, folder)
    (folder / OWN_POLICY_FILE).write_text(plan.policy.to_json())
    (folder / "README.md").write_text(model_card(plan, project.estimate, str(plan.inventory.root)))
    (folder / RECORD_NAME).unlink(missing_ok=True)
    (folder / MARKER_NAME).unlink(missing_ok=True)
    tmp = folder / "config.json.tmp"
    tmp.write_text(json.dumps(output_config(plan), indent=2) + "\n")
    os.replace(tmp, folder / "config.json")


def _move_into_place(partial: Path, out: Path, force: bool) -> None:
    if not out.exists():
        os.replace(partial, out)
        return
    if not force:
        raise StudioError(f"{out} appeared while converting; the result is left in {partial}.")
    old = out.parent / f".{out.name}.old"
    if old.exists():
        shutil.rmtree(old)
    os.replace(out, old)
    os.replace(partial, out)
    shutil.rmtree(old, ignore_errors=True)


__all__ = ["CancelToken", "ConversionCancelled", "ConvertResult", "Progress", "convert"]
