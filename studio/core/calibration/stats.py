"""What a calibration pass learns, and its cache on disk.

Per quantizable unit: the sum of each input channel's squared activation and
the number of rows (tokens) seen, per expert for a stacked unit. `importance`
turns them into the mean squared activation the calibrated quantizer weighs
its error by. An expert that saw fewer than `MIN_EXPERT_TOKENS` tokens gets
the mean over all of its unit's tokens instead (the report counts them).

Per cell (role, layer) and bit width: `sensitivity`, the KL divergence that
quantizing that cell alone adds to the next-token distribution, in nats per
token (embedding, blocks and head alike; `studio.core.calibration.sensitivity`),
and `output_error`, the layer-local measure that came before it (the relative
squared change of the layer's output), kept for comparison. Per layer
(None: the embedding): `layer_gain`, nats of final KL per unit of squared
perturbation of that layer's output.

The cache file carries FORMAT; a file of another format (format 2 held the
layer-local measure under `sensitivity`) is not read, so the pass runs again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MIN_EXPERT_TOKENS = 8
HESSIAN_TOKENS_PER_INPUT = 4
FORMAT = 3
SENSITIVITY_UNIT = "nats"  # KL per token of the next-token distribution

Cell = tuple[str, "int | None"]


@dataclass
class UnitStats:
    sum_sq: np.ndarray  # [in] or [experts, in]
    count: np.ndarray  # [] or [experts]
    xtx: np.ndarray | None = None  # [in, in] or [experts, in, in], for units small enough (probes.py)


@dataclass
class CalibrationStats:
    units: dict[str, UnitStats] = field(default_factory=dict)
    # (role, layer) -> {bits: KL added to the next-token distribution, nats per token}, at `group_size`
    sensitivity: dict[Cell, dict[int, float]] = field(default_factory=dict)
    group_size: int = 64
    corpus_label: str = ""
    tokens: int = 0
    seconds: float = 0.0
    # (role, layer) -> {bits: relative squared change of the layer's output}: the layer-local measure
    output_error: dict[Cell, dict[int, float]] = field(default_factory=dict)
    layer_gain: dict[int | None, float] = field(default_factory=dict)  # layer -> nats per unit ||d||^2

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
        """{cell: {bits: relative output error ||y_q - y|| / ||y||, a fraction}}: the layer-local figure
        the Sensitivity map shows (from `output_error`; the knapsack spends by `sensitivity`, in nats)."""
        return {cell: {bits: math.sqrt(max(e, 0.0)) for bits, e in by_bits.items()}
                for cell, by_bits in self.output_error.items()}

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
                "sensitivity_unit": SENSITIVITY_UNIT, "sensitivity": _cells(self.sensitivity),
                "output_error": _cells(self.output_error),
                "layer_gain": [[layer, gain] for layer, gain in self.layer_gain.items()]}
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
        if meta.get("sensitivity_unit") != SENSITIVITY_UNIT:
            return None
        return cls(units, _uncells(meta["sensitivity"]), meta["group_size"], meta["corpus_label"], meta["tokens"],
                   meta["seconds"], _uncells(meta["output_error"]),
                   {layer: float(gain) for layer, gain in meta["layer_gain"]})


def _cells(table: dict) -> list:
    return [[r, l, {str(b): e for b, e in v.items()}] for (r, l), v in table.items()]


def _uncells(rows: list) -> dict:
    return {(r, l): {int(b): float(e) for b, e in v.items()} for r, l, v in rows}
