"""One conversion from start to end: checks, resume, the three-thread pipeline, finishing."""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from studio.core.cancel import CancelToken
from studio.core.convert.chunks import rows, work_list
from studio.core.convert.compute import clear_cache, compute_chunk
from studio.core.convert.finish import (check_destination, check_disk, check_output, disk_error, finish_folder,
                                        move_into_place, recover_interrupted_move, verify, write_extras)
from studio.core.convert.lock import DestinationLock
from studio.core.convert.pipeline import END, Pipe, Reader, Writer
from studio.core.convert.resume import fingerprint, prepare_partial
from studio.core.errors import StudioError
from studio.core.convert.output_config import output_config
from studio.core.policy.plan import Plan
from studio.core.convert.shard_layout import Layout, plan_layout
from studio.core.validation.loadable import check_parameters, check_tokenizer, check_tokenizer_files

PROGRESS_INTERVAL_S = 0.1


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
    phase: str  # "checking" | "writing" | "finishing" (or "calibrating", before a calibrated conversion)
    # A conversion in more than one step (calibrating, then converting): which step, and the bar
    # and ETA over all of them (`studio.core.calibration.timing.PhasedProgress` fills these in).
    stage: str = ""
    total_fraction: float | None = None
    total_eta_s: float | None = None

    @property
    def fraction(self) -> float:
        return self.bytes_done / self.bytes_total if self.bytes_total else 1.0

    @property
    def overall_fraction(self) -> float:
        return self.fraction if self.total_fraction is None else self.total_fraction

    @property
    def overall_eta_s(self) -> float | None:
        return self.eta_s if self.total_fraction is None else self.total_eta_s


@dataclass
class ConvertResult:
    path: Path
    bytes_written: int
    seconds: float
    resumed_shards: int
    notices: list[str] = field(default_factory=list)  # what the run found and repaired (an interrupted --force)
    calibration: str = ""  # the calibration method ("gptq", "learned"), "" for a plain conversion


class _Reporter:
    """Calls the progress callback at most every PROGRESS_INTERVAL_S (unless forced)."""

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


def _planned_tensors(layout) -> dict[str, tuple[tuple[int, ...], str]]:
    return {slot.name: (slot.shape, slot.dtype) for shard in layout.shards for slot in shard.slots}


def preflight(project, out: str | Path, force: bool = False) -> None:
    """Raise what would stop `convert(project, out, force=force)` before it writes a byte, writing
    nothing: a calibrated conversion runs its pass (hours on a big MoE) only when the conversion
    after it can start."""
    out = Path(out).expanduser().absolute()
    check_destination(project.plan, out, force)
    layout = _checked_layout(project.plan)
    if not (out.parent / f".{out.name}.partial").exists():  # a resumed run needs less: convert checks that
        existing = next(p for p in (out.parent, *out.parent.parents) if p.is_dir())
        check_disk(existing, sum(s.file_bytes for s in layout.shards) + 16 * 2**20)


def _checked_layout(plan: Plan, max_shard_bytes: int = 5 * 10**9) -> Layout:
    layout = plan_layout(plan, max_shard_bytes)
    if not layout.shards:
        raise StudioError("the policy drops every tensor; there is nothing to write.")
    # Before anything is written: the output must be what plain mlx_lm.load accepts.
    check_parameters(output_config(plan), _planned_tensors(layout), "the converted model")
    check_tokenizer_files(plan.inventory.root)
    return layout


def convert(project, out: str | Path, *, force: bool = False,
            progress: Callable[[Progress], None] | None = None, cancel: CancelToken | None = None,
            max_shard_bytes: int = 5 * 10**9, measure_errors: bool = True, quantizer=None) -> ConvertResult:
    """Write `project`'s plan as an MLX folder at `out`; see the package docstring.

    `measure_errors=False` skips the per-unit error sums (no quant_errors.json).
    `quantizer` (a `studio.core.calibration.convert_hook.CalibratedQuantizer`) chooses
    the quantized values instead of MLX's round-to-nearest; its `identity` joins the
    resume fingerprint and its `card_note` the model card."""
    started = time.monotonic()
    plan: Plan = project.plan
    out = Path(out).expanduser().absolute()
    check_destination(plan, out, force=True)  # where it is; whether it may be replaced is checked under the lock
    layout = _checked_layout(plan, max_shard_bytes)
    partial = out.parent / f".{out.name}.partial"
    created = _missing_parents(out.parent)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        lock = DestinationLock(out.parent / f".{out.name}.lock", partial).acquire()
    except OSError as exc:
        _remove_created(created)
        raise disk_error(exc, out.parent) from None
    try:
        notices = recover_interrupted_move(out, force)
        check_destination(plan, out, force)
        if not partial.exists():
            created.append(partial)
        try:
            identity = getattr(quantizer, "identity", "")
            record, done = prepare_partial(partial, fingerprint(plan, layout, identity), layout, plan)
            write_extras(project, partial)
        except OSError as exc:
            raise disk_error(exc, out.parent) from None
        check_tokenizer(partial, shown_as=plan.inventory.root)  # the copy the output will carry, loaded
        remaining = sum(s.file_bytes for i, s in enumerate(layout.shards) if i not in done)
        check_disk(partial, remaining + 16 * 2**20)
    except BaseException:
        _remove_created(created)  # a refusal before any work leaves nothing the run made
        lock.release()
        raise
    try:
        errors = _write_shards(project, layout, partial, record, done, progress, cancel, measure_errors, quantizer)
        try:
            verify(partial, layout, project.estimate.total_bytes)
            finish_folder(project, partial, layout, errors if measure_errors else None,
                          getattr(quantizer, "card_note", ""))
            check_output(partial)
            move_into_place(partial, out, force)
        except OSError as exc:
            raise disk_error(exc, partial) from None
    finally:
        lock.release()
    return ConvertResult(out, layout.data_bytes, time.monotonic() - started, len(done), notices,
                         getattr(quantizer, "method", ""))


def _missing_parents(folder: Path) -> list[Path]:
    """The folders above the output that do not exist yet, deepest last."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing[::-1]


def _remove_created(paths: list[Path]) -> None:
    for path in reversed(paths):
        try:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        except OSError:
            pass


def _write_shards(project, layout, partial: Path, record, done: set[int], progress, cancel,
                  measure_errors: bool, quantizer=None) -> dict[str, list[float]]:
    """Run the reader, compute and writer over every shard not already done; the error sums per unit."""
    plan = project.plan
    estimate = project.estimate
    units_total = len(plan.units)
    resumed_bytes = sum(layout.shards[i].data_bytes for i in done)
    report = _Reporter(progress, units_total, estimate.total_bytes, resumed_bytes)
    units_done = units_total - sum(len(layout.shards[i].units) for i in range(len(layout.shards)) if i not in done)
    report("", units_done, resumed_bytes, "checking", force=True)

    stop = threading.Event()
    inbox, outbox = Pipe(stop), Pipe(stop)
    reader = Reader(plan.inventory.source.reader(), plan, work_list(plan, layout, done), inbox, stop)
    writer = Writer(partial, layout, record, outbox, stop)
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
            if item is END:
                break
            if isinstance(item, BaseException):
                raise item
            chunk, parts = item
            slots = layout.slots_by_unit[chunk.unit_index]
            pieces, error = compute_chunk(plan, chunk, parts, slots, measure_errors, quantizer)
            del parts
            if error is not None:
                sums = errors.setdefault(plan.units[chunk.unit_index].path, [0.0, 0.0])
                sums[0] += error[0]
                sums[1] += error[1]
            shard_index = layout.shard_of_unit[chunk.unit_index]
            for slot, arrays in zip(slots, pieces):
                offset = slot.offset + slot.nbytes * chunk.first // rows(slot.shape)
                for array in arrays:
                    send(("write", shard_index, offset, array))
                    offset += array.nbytes
            del pieces
            clear_cache()
            unit = plan.units[chunk.unit_index]
            if chunk.last:
                units_done += 1
            if chunk.closes_shard is not None:
                paths = (plan.units[u].path for u in layout.shards[chunk.closes_shard].units)
                send(("seal", chunk.closes_shard, {p: errors[p] for p in paths if p in errors}))
            report(unit.path, units_done, resumed_bytes + writer.bytes_written, "writing", force=chunk.last)
        send(END)
        writer.join()
        _raise_writer_error(writer, partial)
    finally:
        stop.set()
        reader.join()
        writer.join()
    _raise_writer_error(writer, partial)
    report("", units_total, estimate.total_bytes, "finishing", force=True)  # dropped units are done too
    return errors


def _raise_writer_error(writer: Writer, folder: Path) -> None:
    error = writer.error
    if error is None:
        return
    if isinstance(error, OSError):
        raise disk_error(error, folder) from None
    raise error
