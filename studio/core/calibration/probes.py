"""Stand-ins for a decoder layer's Linear and SwitchLinear modules during the calibration pass.

A probe computes exactly what the module it replaces computes (in float32: MLX
runs MoE experts only in float32 on a CPU), and on the side
- sums each input channel's squared activation and counts the rows it saw,
  per expert for a stacked unit, from the tokens the model's own router sent
  to that expert (the MoE block routes; the probe only sees the result);
- can stand a replacement weight in for its own (`replace`), which is how the
  sensitivity pass measures a layer with one cell quantized.

A SwitchProbe holds its experts as the source rows read from disk (FP8 stays
one byte a value) and turns one expert at a time into float32, so a layer of
128 experts never exists in float32 at once.
"""

from __future__ import annotations

from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from studio.core.model.unit_source import unit_values
from studio.core.model.unit import Unit

# A replacement maps (float32 weight [out, in], expert index or None) to the weight to use.
Replacement = Callable[[mx.array, "int | None"], mx.array]


# Keep the full input covariance X^T X (for GPTQ) of units whose copy of it is at most this big;
# for a stacked unit, all of its experts' together (each expert's own X_e^T X_e).
FULL_HESSIAN_BYTES = 64 * 2**20
EXPERT_HESSIANS_BYTES = FULL_HESSIAN_BYTES
# A stacked unit's X^T X summed over its experts, one [in, in] float32 matrix, is kept up to this
# size: 8192 wide (268 MB) and below, so every MoE this studio targets (MiniMax-M3 6144, DeepSeek-V3
# 7168). Memory bound during a layer: each stacked probe holds at most EXPERT_HESSIANS_BYTES +
# POOLED_HESSIAN_BYTES besides the layer's weights, and both leave memory (to disk, stats.keep)
# when the layer is done.
POOLED_HESSIAN_BYTES = 320 * 2**20


def _keeps_hessian(experts: int, inputs: int) -> bool:
    return experts * inputs * inputs * 4 <= FULL_HESSIAN_BYTES


class LinearProbe(nn.Module):
    def __init__(self, unit: Unit, weight: mx.array, bias: mx.array | None):
        super().__init__()
        self._unit, self._weight, self._bias = unit, weight, bias
        inputs = weight.shape[-1]
        self.xtx = mx.zeros((inputs, inputs), dtype=mx.float32) if _keeps_hessian(1, inputs) else None
        self.sum_sq = np.zeros(weight.shape[-1], dtype=np.float64)
        self.count = 0
        self.recording = True
        self.replace: Replacement | None = None

    def unit_stats(self, keep):
        """What the pass learned, as `stats.UnitStats`; `keep` moves big arrays to disk."""
        from studio.core.calibration.stats import UnitStats

        xtx = None if self.xtx is None else np.asarray(self.xtx, dtype=np.float32)
        return UnitStats(self.sum_sq, np.asarray(self.count), keep(xtx))

    def weight32(self) -> mx.array:
        return self._weight.astype(mx.float32)

    def __call__(self, x: mx.array) -> mx.array:
        x = x.astype(mx.float32)
        if self.recording:
            flat = x.reshape(-1, x.shape[-1])
            self.sum_sq += np.asarray(mx.sum(flat * flat, axis=0), dtype=np.float64)
            self.count += flat.shape[0]
            if self.xtx is not None:
                self.xtx = self.xtx + flat.T @ flat
                mx.eval(self.xtx)
        w = self.weight32()
        if self.replace is not None:
            w = self.replace(w, None)
        y = x @ w.T
        return y if self._bias is None else y + self._bias.astype(mx.float32)


class SwitchProbe(nn.Module):
    """Replaces `SwitchLinear(x, indices, sorted_indices)`: x [..., 1, in] broadcasts against indices [...]."""

    def __init__(self, unit: Unit, expert_parts: list[list], bias: mx.array | None):
        super().__init__()
        self._unit, self._parts, self._bias = unit, expert_parts, bias
        experts, _, inputs = unit.shape
        self.sum_sq = np.zeros((experts, inputs), dtype=np.float64)
        self.count = np.zeros(experts, dtype=np.int64)
        own = experts * inputs * inputs * 4 <= EXPERT_HESSIANS_BYTES
        self.xtx = np.zeros((experts, inputs, inputs), dtype=np.float32) if own else None
        # Summed over experts; not needed beside every expert's own (their sum is the same matrix).
        pooled = not own and inputs * inputs * 4 <= POOLED_HESSIAN_BYTES
        self.pooled = mx.zeros((inputs, inputs), dtype=mx.float32) if pooled else None
        self.recording = True
        self.replace: Replacement | None = None

    def unit_stats(self, keep):
        from studio.core.calibration.stats import UnitStats

        pooled = None if self.pooled is None else np.asarray(self.pooled, dtype=np.float32)
        return UnitStats(self.sum_sq, np.asarray(self.count), keep(self.xtx), keep(pooled))

    def expert32(self, e: int) -> mx.array:
        """Expert e's float32 weight [out, in], from its source rows."""
        return unit_values(self._unit, self._parts[e])[0].astype(mx.float32)

    def __call__(self, x: mx.array, indices: mx.array, sorted_indices: bool = False) -> mx.array:
        out_shape = (*indices.shape, 1, self._unit.shape[1])
        x = mx.broadcast_to(x, (*indices.shape, *x.shape[-2:])).reshape(-1, x.shape[-1]).astype(mx.float32)
        flat = np.asarray(indices.reshape(-1))
        order = np.argsort(flat, kind="stable")
        bounds = np.searchsorted(flat[order], np.arange(self._unit.shape[0] + 1))
        if self.recording and self.pooled is not None:  # every row goes to one expert: the sum over experts
            self.pooled = self.pooled + x.T @ x
            mx.eval(self.pooled)
        pieces = []
        for e in range(self._unit.shape[0]):
            rows = order[bounds[e]:bounds[e + 1]]
            if rows.size == 0:
                continue
            xe = x[mx.array(rows)]
            if self.recording:
                self.sum_sq[e] += np.asarray(mx.sum(xe * xe, axis=0), dtype=np.float64)
                self.count[e] += rows.size
                if self.xtx is not None:
                    self.xtx[e] += np.asarray(xe.T @ xe)
            w = self.expert32(e)
            if self.replace is not None:
                w = self.replace(w, e)
            y = xe @ w.T
            if self._bias is not None:
                y = y + self._bias[e].astype(mx.float32)
            mx.eval(y)  # one expert's weight in float32 at a time
            pieces.append(y)
        y = mx.concatenate(pieces, axis=0)[mx.array(np.argsort(order, kind="stable"))]
        return y.reshape(out_shape)


def is_linear(module) -> bool:
    return type(module) is nn.Linear


def is_switch(module) -> bool:
    return type(module).__name__ == "SwitchLinear"
