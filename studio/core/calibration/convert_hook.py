"""The converter's calibrated quantizers: `convert(..., quantizer=CalibratedQuantizer(stats))` (method
"gptq") or `LearnedQuantizer(learned_result)` (method "learned", see learned.py).

For every affine-quantized unit the calibration pass measured, the chunk's
rows (rows of a matrix, experts of a stacked unit) are quantized by
`calibrated_quantize` with that unit's activation statistics, or by GPTQ where
the pass kept X^T X (per routed expert: its own, the pooled one shrunk toward
it, or none; `expert_hessians`); everything else
(units nobody measured, the mx/nv float modes) goes through MLX's own
`mx.quantize` as in a plain conversion. Either way the tensors written have the
names, shapes, dtypes and bytes of the plain conversion.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict

import numpy as np

from studio.core.calibration.expert_hessians import CLIP, METHOD_NAMES, OWN, POOLED
from studio.core.calibration.gptq import gptq_quantize
from studio.core.calibration.quantizer import calibrated_quantize
from studio.core.calibration.stats import MIN_EXPERT_TOKENS, CalibrationStats

_LAYER = re.compile(r"\.layers\.(\d+)\.")
from studio.core.convert.compute import mx_dtype, quantize_weight
from studio.core.formatting import shareable_name


class CalibratedQuantizer:
    method = "gptq"

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
        hessian = self.hessian_for(unit)
        if importance.ndim == 2:  # per expert; the chunk's rows are experts [first, stop)
            importance = importance[first:stop]
            hessian = None if hessian is None else hessian[first:stop]
        self.used.add(unit.path)
        if hessian is not None:
            return list(gptq_quantize(x, decision.group_size, decision.bits, hessian, mx_dtype(decision.dtype)))
        return list(calibrated_quantize(x, decision.group_size, decision.bits, importance,
                                        mx_dtype(decision.dtype)))

    def hessian_for(self, unit):
        """What GPTQ quantizes `unit` with (None: the clipping search alone)."""
        return self.stats.hessian(unit.path)

    def expert_methods(self) -> dict[int, list[int]]:
        """Per layer, how many (expert, projection) pairs of the stacked units quantized so far got
        [GPTQ with their own Hessian, the pooled/shrunk fallback, clipping alone]."""
        layers: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
        for path in sorted(self.used):
            methods = self.stats.expert_methods(path)
            match = _LAYER.search(path)
            if methods is None or match is None:
                continue
            tally = layers[int(match.group(1))]
            for i, method in enumerate((OWN, POOLED, CLIP)):
                tally[i] += int(np.sum(methods == method))
        return dict(sorted(layers.items()))

    def expert_lines(self) -> list[str]:
        """"layer 3 experts: 30 GPTQ own Hessian, 18 pooled/shrunk fallback, 0 clip-only", per layer."""
        return [f"layer {layer} experts: " + ", ".join(f"{n} {name}" for n, name in zip(tally, METHOD_NAMES))
                for layer, tally in self.expert_methods().items()]

    @property
    def card_note(self) -> str:
        stats = self.stats
        thin, experts = stats.thin_experts()
        fallback = (f" {thin} of {experts} experts saw fewer than {MIN_EXPERT_TOKENS} calibration tokens and "
                    "used their projection's mean statistics instead." if experts else "")
        return "\n".join([
            "## Calibration",
            "",
            f"Method: gptq. Quantized with calibration: each group's scale and bias minimise the quantization error weighted "
            f"by the mean squared activation of its input channels (the diagonal of X^T X), and where the whole "
            f"X^T X was small enough to keep, the values are chosen GPTQ-style (rounding errors fed forward "
            f"across columns); the statistics come from running "
            f"{stats.tokens:,} tokens of {shareable_name(stats.corpus_label)} through the source model one decoder layer at a "
            f"time.{fallback} Units without statistics used MLX's round-to-nearest. The tensors are those of a "
            "plain conversion of the same policy; only the values differ. The calibration text is not the "
            "evaluation text (see Quality).",
            "",
            *self._expert_section(),
        ])

    def _expert_section(self) -> list[str]:
        lines = self.expert_lines()
        if not lines:
            return []
        return ["Routed experts (counted per expert and projection): GPTQ with the expert's own X^T X where it "
                "saw at least 4 calibration tokens per input channel; otherwise GPTQ with its projection's X^T X "
                "pooled over all experts, rescaled to the expert's own per-channel activation (and shrunk toward "
                "its own X^T X where that was kept); clipping search alone where neither was available.", "",
                *[f"- {line}" for line in lines], ""]


class LearnedQuantizer:
    """The learned method's tensors (written by the streamed pass, read back a chunk of rows at a
    time); the embedding, the head and anything the pass did not learn as the gptq method does."""

    method = "learned"

    def __init__(self, result):
        self.result = result
        self.fallback = CalibratedQuantizer(result.stats)
        self.used: set[str] = set()
        self.identity = "learned:" + result.key

    def __call__(self, x, unit, decision, first: int, stop: int) -> list:
        if decision.action == "quantize" and unit.path in self.result.store:
            self.used.add(unit.path)
            return self.result.store.rows(unit.path, first, stop)
        return self.fallback(x, unit, decision, first, stop)

    @property
    def card_note(self) -> str:
        meta = self.result.store.meta
        layers = self.result.layers
        start = sum(r.start_error for r in layers) / max(len(layers), 1)
        learned = sum(r.error for r in layers) / max(len(layers), 1)
        change = f"{100 * (learned / start - 1):+.1f}%" if start > 0 else "n/a"
        return "\n".join([
            "## Calibration",
            "",
            "Method: learned (block-wise). Quantized with calibration, one decoder layer at a time: each "
            "quantized matrix started from the GPTQ/clip choice of the gptq method, then each value's rounding "
            "(AutoRound's learned offset, by sign-SGD) and each group's scale and bias were tuned with MLX "
            "autograd so that the layer's output on the quantized model's hidden states comes closest to the "
            "float model's. "
            f"Mean relative error of the layer outputs on held-out calibration tokens: {start:.3g} at the GPTQ "
            f"start, {learned:.3g} learned ({change}). The statistics and targets come from running "
            f"{meta.get('tokens', 0):,} tokens of {meta.get('corpus_label', '')} through the source model. "
            "The embedding and head used the gptq method. The tensors are those of a plain conversion of the "
            "same policy; only the values differ. The calibration text is not the evaluation text (see Quality).",
            "",
        ])
