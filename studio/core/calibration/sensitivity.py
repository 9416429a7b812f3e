"""Output-space sensitivity: how much a layer's output moves when one cell is quantized.

For each cell (role, layer) the calibration pass can quantize and each bit
width: quantize that cell alone with the calibrated quantizer, run the layer
on the probe tokens and compare its output (the residual stream) with the
float layer's: ``sum ||y_q - y||^2 / sum ||y||^2``. The embedding's figure is
the relative error of the embedded probe tokens (the first layer's input), the
head's the relative error of the logits. Errors this small add about
linearly across cells (each is a small perturbation of the residual stream),
which is what lets the knapsack sum them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

import mlx.core as mx
import numpy as np

from studio.core.calibration.quantizer import calibrated_quantize
from studio.core.units import Unit

HEAD_ROWS = 8192  # logits computed this many vocabulary rows at a time


def round_trip(w: mx.array, group_size: int, bits: int, importance, dtype) -> mx.array:
    """float32 values of `w` after calibrated quantization (what the converter would write)."""
    q, s, b = calibrated_quantize(w, group_size, bits, importance, dtype)
    return mx.dequantize(q, s, b, group_size, bits).astype(mx.float32)


def _replacement(importance, group_size: int, bits: int, dtype):
    def replace(w, expert):
        a = importance if importance is None or expert is None else importance[expert]
        if a is None:
            a = mx.ones((w.shape[-1],), dtype=mx.float32)
        return round_trip(w, group_size, bits, a, dtype)

    return replace


def _relative(y: mx.array, ref: mx.array) -> float:
    err = mx.sum(mx.square(y - ref)).item()
    den = mx.sum(mx.square(ref)).item()
    return err / den if den > 0 else 0.0


def layer_cells(probes: dict, group_size: int) -> dict[tuple, list]:
    cells = defaultdict(list)
    for probe in probes.values():
        unit: Unit = probe._unit
        if unit.quantizable(group_size):
            cells[(unit.role, unit.layer)].append(probe)
    return dict(cells)


def measure_layer(run: Callable[[mx.array], mx.array], probes: dict, x: mx.array, reference: mx.array,
                  importance: Callable[[str], object], bits_options, group_size: int, dtype,
                  check_cancel: Callable[[], None]) -> dict[tuple, dict[int, float]]:
    """{cell: {bits: relative output error}} for every measurable cell of one layer."""
    out = {}
    for probe in probes.values():
        probe.recording = False
    for cell, members in layer_cells(probes, group_size).items():
        out[cell] = {}
        for bits in bits_options:
            check_cancel()
            for probe in members:
                probe.replace = _replacement(importance(probe._unit.path), group_size, bits, dtype)
            try:
                y = run(x)
                out[cell][bits] = _relative(y, reference)
            finally:
                for probe in members:
                    probe.replace = None
    return out


def measure_embedding(table: mx.array, tokens: np.ndarray, bits_options, group_size: int, dtype) -> dict[int, float]:
    """Relative error of the embedded tokens (each row counted as often as it occurs)."""
    ids, counts = np.unique(tokens.reshape(-1), return_counts=True)
    rows = table[mx.array(ids)].astype(mx.float32)
    weight = mx.array(counts.astype(np.float32))[:, None]
    den = mx.sum(weight * mx.square(rows)).item()
    ones = mx.ones((rows.shape[-1],), dtype=mx.float32)
    out = {}
    for bits in bits_options:
        deq = round_trip(rows, group_size, bits, ones, dtype)
        out[bits] = mx.sum(weight * mx.square(deq - rows)).item() / den if den > 0 else 0.0
    return out


def measure_head(weight: mx.array, h: mx.array, importance, bits_options, group_size: int, dtype) -> dict[int, float]:
    """Relative error of the logits of hidden states `h` [tokens, hidden]."""
    err = {bits: 0.0 for bits in bits_options}
    den = 0.0
    for first in range(0, weight.shape[0], HEAD_ROWS):
        w = weight[first:first + HEAD_ROWS].astype(mx.float32)
        ref = h @ w.T
        den += mx.sum(mx.square(ref)).item()
        for bits in bits_options:
            deq = round_trip(w, group_size, bits, importance, dtype)
            err[bits] += mx.sum(mx.square(h @ deq.T - ref)).item()
    return {bits: e / den if den > 0 else 0.0 for bits, e in err.items()}
