"""Measure quantization error on samples of the real weights, without converting.

    survey(project, bits_options=AFFINE_BITS, progress=None, cancel=None,
           max_elements_per_unit=2**22) -> Survey

For every unit the current plan quantizes, read a bounded sample of its
source (a few evenly spaced experts of a stacked unit, a few evenly spaced row
blocks of a matrix: at most `max_elements_per_unit` values), dequantize and
transform it with the converter's own code, then round-trip it through
`mx.quantize` at each bit width, at the unit's own group size and mode and in
the output dtype, as the converter would. Memory is bounded by one sample;
the whole of MiniMax-M3 (about 600 units) reads about 2.5 GB at the default.

The result is a dict {(role, layer): {bits: error}} in the form
`budget.propose` takes: the element-weighted mean squared relative error of
the cell's units. `Survey.units` holds the per-unit relative errors and
`Survey.error_map()` the map the window shows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from studio.core.model.dequantize import FP8_BLOCK
from studio.core.errors import StudioError
from studio.core.policy.plan import Plan
from studio.core.defaults import AFFINE_BITS, MODES
from studio.core.quant_error.error_map import ErrorMap, relative
from studio.core.quant_error.round_trip import round_trip_sums
from studio.core.model.unit_source import read_unit_rows, unit_values, whole_only
from studio.core.model.unit import Unit

DEFAULT_MAX_ELEMENTS = 2**22  # 16 MB of float32 per unit: seconds on a Mac for all of M3
SAMPLE_EXPERTS = 4
ROW_BLOCKS = 4


class SurveyCancelled(StudioError):
    """The user cancelled the survey."""


@dataclass(frozen=True)
class SurveyProgress:
    unit: str
    done: int
    total: int

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


@dataclass
class UnitSurvey:
    role: str
    layer: int | None
    group_size: int
    mode: str
    elements: int          # of the whole unit (the weight in cell means)
    sampled: int           # elements actually measured
    errors: dict[int, float] = field(default_factory=dict)  # bits -> relative error


def model_identity(inventory) -> str:
    """Which model a measurement was made on: its source (folder, or Hub repo at a commit) and the
    names, sizes and dates of its weight files, so another model, or this one rewritten, differs."""
    return f"{inventory.source.label}\n{inventory.source.identity(inventory.shards)}"


class Survey(dict):
    """{(role, layer): {bits: element-weighted mean squared relative error}}, plus `units`, and what
    it was measured on: the model (`model`, `model_label`) and the bit widths (`bits`)."""

    def __init__(self, units: dict[str, UnitSurvey], seconds: float = 0.0, *, model: str = "",
                 model_label: str = "", bits: tuple[int, ...] = AFFINE_BITS):
        super().__init__()
        self.units = units
        self.seconds = seconds
        self.model, self.model_label, self.bits = model, model_label, tuple(bits)
        weights: dict = {}
        for u in units.values():
            cell = self.setdefault((u.role, u.layer), {})
            weights[(u.role, u.layer)] = weights.get((u.role, u.layer), 0) + u.elements
            for bits, e in u.errors.items():
                cell[bits] = cell.get(bits, 0.0) + u.elements * e * e
        for key, cell in self.items():
            for bits in cell:
                cell[bits] /= weights[key]

    def covers(self, plan: Plan) -> bool:
        """Whether this survey measured every unit `plan` quantizes, at its group size and mode
        (what fitting to a budget needs before it can trust the errors)."""
        for unit, decision in plan.rows():
            if decision.action == "quantize":
                measured = self.units.get(unit.path)
                if measured is None or (measured.group_size, measured.mode) != (decision.group_size, decision.mode):
                    return False
        return True

    def mismatch(self, project, bits: tuple[int, ...] = AFFINE_BITS) -> str | None:
        """Why this survey cannot fit `project` to a budget (one sentence), or None if it can:
        it must be of the same model, cover every unit the policy quantizes at its group size and
        mode, and have measured every bit width the fit chooses from."""
        label = project.inventory.source.label
        if self.model != model_identity(project.inventory):
            return (f"the error survey was measured on {self.model_label or 'another model'}, not on the open "
                    f"model ({label}); survey this model first.")
        if not self.covers(project.plan):
            return ("the error survey measured another policy's tensors, group sizes or modes; survey the "
                    "current policy first.")
        missing = [b for b in bits if b not in self.bits]
        if missing:
            return (f"the error survey did not measure {', '.join(f'{b}-bit' for b in missing)}; survey at every "
                    "bit width first.")
        return None

    def check(self, project, bits: tuple[int, ...] = AFFINE_BITS) -> None:
        """Raise the `mismatch` sentence, if any."""
        reason = self.mismatch(project, bits)
        if reason is not None:
            raise StudioError(reason)

    def error_map(self) -> ErrorMap:
        errors = ErrorMap("survey")
        for path, u in self.units.items():
            for bits, e in u.errors.items():
                errors.add(path, (bits, u.group_size, u.mode), e)
        return errors


def sample_spans(plan: Plan, index: int, max_elements: int) -> list[tuple[int, int, int | None]]:
    """(first, stop, rows_per_source) output-row spans to read for one unit's sample."""
    unit: Unit = plan.units[index]
    rows = unit.shape[0] if len(unit.shape) >= 2 else 1
    if whole_only(unit) or unit.elements <= max_elements:
        return [(0, rows, None)]
    if len(unit.shape) == 3:  # experts: a few evenly spaced ones
        per_expert = unit.shape[1] * unit.shape[2]
        count = max(1, min(SAMPLE_EXPERTS, rows, max_elements // per_expert or 1))
        picks = sorted({int((i + 0.5) * rows / count) for i in range(count)})
        # A stacked unit's experts are separate sources: read only the first rows of
        # each. Other 3-D sources (gpt-oss) read whole experts, bounded by one expert.
        sub = max(1, max_elements // (len(picks) * unit.shape[2])) if unit.transform == "stack" else None
        sub = None if sub is not None and sub >= unit.shape[1] else sub
        return [(e, e + 1, sub) for e in picks]
    wanted = max(1, max_elements // unit.shape[-1])
    blocks = min(ROW_BLOCKS, wanted)
    per_block = max(1, wanted // blocks)
    source = plan.inventory.by_name[unit.sources[0]]
    align = FP8_BLOCK if source.encoding == "fp8" and source.companions else 1  # block scales start on 128 rows
    spans = []
    for i in range(blocks):
        first = int(i * rows / blocks) // align * align
        spans.append((first, min(rows, first + per_block), None))
    return spans


def survey(project, bits_options: tuple[int, ...] = AFFINE_BITS,
           progress: Callable[[SurveyProgress], None] | None = None, cancel=None,
           max_elements_per_unit: int = DEFAULT_MAX_ELEMENTS) -> Survey:
    """Relative errors of every quantized unit at each of `bits_options`; see the module docstring."""
    import mlx.core as mx

    plan: Plan = project.plan  # one snapshot: the window may change the policy meanwhile
    todo = [i for i, d in enumerate(plan.decisions) if d.action == "quantize"]
    dtypes = {"BF16": mx.bfloat16, "F16": mx.float16, "F32": mx.float32}
    measured_on = model_identity(plan.inventory)
    reader = plan.inventory.source.reader()
    started = time.monotonic()
    units: dict[str, UnitSurvey] = {}
    try:
        for done, index in enumerate(todo):
            if cancel is not None and cancel.cancelled:
                raise SurveyCancelled("error survey cancelled.")
            unit, decision = plan.units[index], plan.decisions[index]
            if progress is not None:
                progress(SurveyProgress(unit.path, done, len(todo)))
            allowed = [b for b in bits_options if b in MODES[decision.mode]["bits"]]
            sums = {b: [0.0, 0.0] for b in allowed}
            sampled = 0
            for first, stop, sub in sample_spans(plan, index, max_elements_per_unit):
                x = unit_values(unit, read_unit_rows(reader, plan.inventory, unit, first, stop, sub))
                xq = x.astype(dtypes[decision.dtype])
                pending = {b: round_trip_sums(x, mx.quantize(xq, decision.group_size, b, mode=decision.mode),
                                              b, decision.group_size, decision.mode, axes=(-1,))
                           for b in allowed}
                mx.eval(list(pending.values()))
                for b, (e, r) in pending.items():
                    sums[b][0] += float(np.asarray(e, dtype=np.float64).sum())
                    sums[b][1] += float(np.asarray(r, dtype=np.float64).sum())
                sampled += x.size
                del x, xq, pending
            mx.clear_cache()
            units[unit.path] = UnitSurvey(unit.role, unit.layer, decision.group_size, decision.mode,
                                          unit.elements, sampled, {b: relative(*sums[b]) for b in allowed})
        if progress is not None:
            progress(SurveyProgress("", len(todo), len(todo)))
    finally:
        reader.close()
    return Survey(units, time.monotonic() - started, model=measured_on,
                  model_label=plan.inventory.source.label, bits=bits_options)
