"""What a calibration pass learns, and its cache on disk.

Per quantizable unit: the sum of each input channel's squared activation and
the number of rows (tokens) seen, per expert for a stacked unit. `importance`
turns them into the mean squared activation the calibrated quantizer weighs
its error by. An expert that saw fewer than `MIN_EXPERT_TOKENS` tokens gets
the mean over all of its unit's tokens instead (the report counts them).

Per cell (role, layer): the output-space sensitivity at each bit width, the
relative error of the layer's output (the residual stream) with that cell
alone quantized, from `studio.core.calibration.sensitivity`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MIN_EXPERT_TOKENS = 8
HESSIAN_TOKENS_PER_INPUT = 4
FORMAT = 2

Cell = tuple[str, "int | None"]


@dataclass
class UnitStats:
    sum_sq: np.ndarray  # [in] or [experts, in]
    count: np.ndarray  # [] or [experts]
    xtx: np.ndarray | None = None  # [in, in] or [experts, in, in], for units small enough (probes.py)


@dataclass
class CalibrationStats:
    units: dict[str, UnitStats] = field(default_factory=dict)
    # (role, layer) -> {bits: squared relative output error, sum ||y_q - y||^2 / sum ||y||^2}, at
    # `group_size`: additive across cells, so the knapsack sums it. People read `relative_output_error`.
    sensitivity: dict[Cell, dict[int, float]] = field(default_factory=dict)
    group_size: int = 64
    corpus_label: str = ""
    tokens: int = 0
    seconds: float = 0.0

    def importance(self, path: str):
        """Mean squared activation per input channel ([in] or [experts, in]) as an MLX array, or None."""
        import mlx.core as mx

        stats = self.units.get(path)
        if stats is None:
            return None
        total = float(np.sum(stats.count))
        if total <= 0:
            return None
        pooled = stats.sum_sq.reshape(-1, stats.sum_sq.shape[-1]).sum(axis=0) / total
        if stats.sum_sq.ndim == 1:
            return mx.array(stats.sum_sq / total, dtype=mx.float32)
        counts = stats.count[:, None]
        per_expert = stats.sum_sq / np.maximum(counts, 1)
        per_expert = np.where(counts >= MIN_EXPERT_TOKENS, per_expert, pooled[None, :])
        return mx.array(per_expert, dtype=mx.float32)

    def hessian(self, path: str) -> np.ndarray | None:
        """Mean X^T X ([in, in] or [experts, in, in]), or None where too few tokens were seen to trust it:
        fewer than HESSIAN_TOKENS_PER_INPUT tokens per input channel leaves X^T X rank-deficient, and
        GPTQ then fits the calibration tokens at the expense of others. An expert that saw too few uses
        its unit's mean over all tokens."""
        stats = self.units.get(path)
        if stats is None or stats.xtx is None:
            return None
        need = HESSIAN_TOKENS_PER_INPUT * stats.xtx.shape[-1]
        total = float(np.sum(stats.count))
        if total < need:
            return None
        if stats.xtx.ndim == 2:
            return stats.xtx / total
        pooled = stats.xtx.sum(axis=0) / total
        counts = stats.count[:, None, None]
        per_expert = stats.xtx / np.maximum(counts, 1)
        return np.where(counts >= need, per_expert, pooled[None])

    def relative_output_error(self) -> dict[Cell, dict[int, float]]:
        """{cell: {bits: relative output error ||y_q - y|| / ||y||, a fraction}}: the figure to show for
        `sensitivity` (Fit to budget reports the same, as an RMS over cells)."""
        return {cell: {bits: math.sqrt(max(e, 0.0)) for bits, e in by_bits.items()}
                for cell, by_bits in self.sensitivity.items()}

    def thin_experts(self) -> tuple[int, int]:
        """(experts that fell back to their unit's mean, experts in all)."""
        thin = total = 0
        for stats in self.units.values():
            if stats.count.ndim == 1:
                total += stats.count.size
                thin += int(np.sum(stats.count < MIN_EXPERT_TOKENS))
        return thin, total

    # ------------------------------------------------------------------ cache

    def save(self, path: Path) -> None:
        arrays = {}
        for i, (name, stats) in enumerate(self.units.items()):
            arrays[f"s{i}"] = stats.sum_sq
            arrays[f"c{i}"] = stats.count
            if stats.xtx is not None:
                arrays[f"h{i}"] = stats.xtx
        meta = {"format": FORMAT, "names": list(self.units), "group_size": self.group_size,
                "corpus_label": self.corpus_label, "tokens": self.tokens, "seconds": self.seconds,
                "sensitivity": [[r, l, {str(b): e for b, e in v.items()}] for (r, l), v in self.sensitivity.items()]}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "CalibrationStats | None":
        try:
            with np.load(path) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("format") != FORMAT:
                    return None
                units = {name: UnitStats(data[f"s{i}"], data[f"c{i}"], data[f"h{i}"] if f"h{i}" in data else None)
                         for i, name in enumerate(meta["names"])}
        except (OSError, ValueError, KeyError):
            return None
        sensitivity = {(r, l): {int(b): float(e) for b, e in v.items()} for r, l, v in meta["sensitivity"]}
        return cls(units, sensitivity, meta["group_size"], meta["corpus_label"], meta["tokens"], meta["seconds"])
