"""The converter's calibrated quantizer: `convert(..., quantizer=CalibratedQuantizer(stats))`.

For every affine-quantized unit the calibration pass measured, the chunk's
rows (rows of a matrix, experts of a stacked unit) are quantized by
`calibrated_quantize` with that unit's activation statistics; everything else
(units nobody measured, the mx/nv float modes) goes through MLX's own
`mx.quantize` as in a plain conversion. Either way the tensors written have the
names, shapes, dtypes and bytes of the plain conversion.
"""

from __future__ import annotations

import hashlib

from studio.core.calibration.gptq import gptq_quantize
from studio.core.calibration.quantizer import calibrated_quantize
from studio.core.calibration.stats import MIN_EXPERT_TOKENS, CalibrationStats
from studio.core.convert.compute import mx_dtype, quantize_weight


class CalibratedQuantizer:
    def __init__(self, stats: CalibrationStats):
        self.stats = stats
        self.used: set[str] = set()
        h = hashlib.sha256()
        for name in sorted(stats.units):
            h.update(name.encode())
            h.update(stats.units[name].sum_sq.tobytes())
            h.update(stats.units[name].count.tobytes())
        self.identity = "calibrated:" + h.hexdigest()

    def __call__(self, x, unit, decision, first: int, stop: int) -> list:
        importance = self.stats.importance(unit.path) if decision.mode == "affine" else None
        if importance is None:
            return quantize_weight(x, decision)
        hessian = self.stats.hessian(unit.path)
        if importance.ndim == 2:  # per expert; the chunk's rows are experts [first, stop)
            importance = importance[first:stop]
            hessian = None if hessian is None else hessian[first:stop]
        self.used.add(unit.path)
        if hessian is not None:
            return list(gptq_quantize(x, decision.group_size, decision.bits, hessian, mx_dtype(decision.dtype)))
        return list(calibrated_quantize(x, decision.group_size, decision.bits, importance,
                                        mx_dtype(decision.dtype)))

    @property
    def card_note(self) -> str:
        stats = self.stats
        thin, experts = stats.thin_experts()
        fallback = (f" {thin} of {experts} experts saw fewer than {MIN_EXPERT_TOKENS} calibration tokens and "
                    "used their projection's mean statistics instead." if experts else "")
        return "\n".join([
            "## Calibration",
            "",
            f"Quantized with calibration: each group's scale and bias minimise the quantization error weighted "
            f"by the mean squared activation of its input channels (the diagonal of X^T X), and where the whole "
            f"X^T X was small enough to keep, the values are chosen GPTQ-style (rounding errors fed forward "
            f"across columns); the statistics come from running "
            f"{stats.tokens:,} tokens of {stats.corpus_label} through the source model one decoder layer at a "
            f"time.{fallback} Units without statistics used MLX's round-to-nearest. The tensors are those of a "
            "plain conversion of the same policy; only the values differ. The calibration text is not the "
            "evaluation text (see Quality).",
            "",
        ])


def calibrate_and_convert(project, out, *, text=None, progress=None, cancel=None, **kwargs):
    """The window's calibrated conversion: the calibration pass (cached), then `convert` with
    its quantizer; calibration progress arrives as convert Progress with phase "calibrating"."""
    from studio.core.calibration.calibrate import calibrate
    from studio.core.convert import Progress, convert

    def calibrating(p) -> None:
        if progress is not None:
            progress(Progress(p.label, p.step, p.total, p.step, p.total, 0.0, p.eta_s, "calibrating"))

    stats = calibrate(project, text, sensitivity=False, progress=calibrating, cancel=cancel)
    return convert(project, out, progress=progress, cancel=cancel, quantizer=CalibratedQuantizer(stats), **kwargs)
