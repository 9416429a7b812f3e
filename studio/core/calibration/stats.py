"""What a calibration pass learns, and its cache on disk.

Per quantizable unit: the sum of each input channel's squared activation and
the number of rows (tokens) seen, per expert for a stacked unit. `importance`
turns them into the mean squared activation the calibrated quantizer weighs
its error by. An expert that saw fewer than `MIN_EXPERT_TOKENS` tokens gets
the mean over all of its unit's tokens instead (the report counts them).
Where small enough (probes.py), X^T X for GPTQ: a unit's, each expert's, and
a stacked unit's sum over its experts; `hessian` turns them into what GPTQ
uses (per expert: `expert_hessians`).

Arrays bigger than SPILL_BYTES (a MiniMax-M3 projection's pooled X^T X is
151 MB) do not stay in memory: the pass writes each to a .npy file next to
the cache entry as soon as its layer is done (`keep`) and reads it back when
it is used, so memory stays flat however many layers the model has.

Per cell (role, layer): the output-space sensitivity at each bit width, the
relative error of the layer's output (the residual stream) with that cell
alone quantized, from `studio.core.calibration.sensitivity`.

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
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from studio.core.calibration.expert_hessians import (HESSIAN_TOKENS_PER_INPUT, MIN_EXPERT_TOKENS, ExpertHessians,
                                                     expert_hessians, expert_methods, read)

FORMAT = 4  # 4: big arrays in a folder beside the .npz; pooled X^T X of stacked units
SPILL_BYTES = 4 * 2**20
SENSITIVITY_UNIT = "nats"  # KL per token of the next-token distribution

Cell = tuple[str, "int | None"]


@dataclass
class UnitStats:
    sum_sq: np.ndarray  # [in] or [experts, in]
    count: np.ndarray  # [] or [experts]
    xtx: np.ndarray | Path | None = None  # [in, in] or [experts, in, in], for units small enough (probes.py)
    pooled: np.ndarray | Path | None = None  # [in, in]: a stacked unit's X^T X summed over its experts


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
    folder: Path | None = None  # where `keep` spills big arrays
    _factors: dict = field(default_factory=dict, repr=False)  # one stacked unit's GPTQ factor, reused by chunks

    def keep(self, array):
        """`array` itself, or where it went on disk when it is bigger than SPILL_BYTES."""
        if array is None or self.folder is None or array.nbytes <= SPILL_BYTES:
            return array
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{sum(1 for _ in self.folder.glob('*.npy'))}.npy"
        np.save(path, array)
        return path


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

    def hessian(self, path: str) -> "np.ndarray | ExpertHessians | None":
        """Mean X^T X [in, in] of a unit, or a stacked unit's `ExpertHessians`, or None where too few
        tokens were seen to trust it: fewer than HESSIAN_TOKENS_PER_INPUT tokens per input channel
        leaves X^T X rank-deficient, and GPTQ then fits the calibration tokens at the expense of others."""
        stats = self.units.get(path)
        if stats is None:
            return None
        if stats.sum_sq.ndim == 2:
            if path not in self._factors:  # a new unit: the previous one's factor is done with
                self._factors.clear()
                self._factors[path] = {}
            return expert_hessians(stats, self._factors[path])
        if stats.xtx is None:
            return None
        total = float(np.sum(stats.count))
        if total < HESSIAN_TOKENS_PER_INPUT * stats.sum_sq.shape[-1]:
            return None
        return read(stats.xtx) / total

    def expert_methods(self, path: str) -> np.ndarray | None:
        """OWN / POOLED / CLIP per expert of a stacked unit (expert_hessians), None for other units."""
        stats = self.units.get(path)
        if stats is None or stats.sum_sq.ndim != 2:
            return None
        return expert_methods(stats)

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

    @staticmethod
    def spill_folder(path: Path) -> Path:
        """Where the cache entry `path` keeps its big arrays."""
        return path.with_name(path.stem + ".arrays")

    def save(self, path: Path) -> None:
        """The entry is `path` (an .npz, written last) plus `spill_folder(path)` for the big arrays."""
        arrays, files = {}, {}
        folder = self.spill_folder(path)
        for i, (name, stats) in enumerate(self.units.items()):
            arrays[f"s{i}"] = stats.sum_sq
            arrays[f"c{i}"] = stats.count
            for key, value in ((f"h{i}", stats.xtx), (f"p{i}", stats.pooled)):
                if isinstance(value, np.ndarray):
                    arrays[key] = value
                elif value is not None:
                    if Path(value).parent.resolve() != folder.resolve():
                        folder.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(value, folder / Path(value).name)
                    files[key] = Path(value).name
        meta = {"format": FORMAT, "names": list(self.units), "files": files, "group_size": self.group_size,
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
                folder = cls.spill_folder(path)
                files = {key: folder / name for key, name in meta["files"].items()}
                if not all(f.is_file() for f in files.values()):
                    return None

                def array(key):
                    return data[key] if key in data else files.get(key)

                units = {name: UnitStats(data[f"s{i}"], data[f"c{i}"], array(f"h{i}"), array(f"p{i}"))
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
