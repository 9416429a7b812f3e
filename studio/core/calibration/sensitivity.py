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

from studio.core.calibration.gptq import gptq_quantize
from studio.core.calibration.quantizer import calibrated_quantize
from studio.core.model.unit import Unit

HEAD_ROWS = 8192  # logits computed this many vocabulary rows at a time


def round_trip(w: mx.array, group_size: int, bits: int, importance, dtype, hessian=None) -> mx.array:
    """float32 values of `w` after calibrated quantization (what the converter would write)."""
    if hessian is not None:
        q, s, b = gptq_quantize(w, group_size, bits, hessian, dtype)
    else:
        q, s, b = calibrated_quantize(w, group_size, bits, importance, dtype)
    return mx.dequantize(q, s, b, group_size, bits).astype(mx.float32)


BLOCK_ELEMENTS = 16 * 2**20  # experts are quantized this many values at a time


def _replacement(probe, importance, hessian, group_size: int, bits: int, dtype):
    """The probe's weights after calibrated quantization. A stacked unit's experts are
    quantized in blocks of about BLOCK_ELEMENTS values (the probe asks in expert order),
    so small experts go many to a call and large ones one at a time."""
    block = {"first": 0, "stop": 0, "values": None}

    def replace(w, expert):
        if expert is None:
            a = importance if importance is not None else mx.ones((w.shape[-1],), dtype=mx.float32)
            return round_trip(w, group_size, bits, a, dtype, hessian)
        if not block["first"] <= expert < block["stop"]:
            per = max(1, BLOCK_ELEMENTS // max(w.size, 1))
            stop = min(probe._unit.shape[0], expert + per)
            stack = mx.stack([w] + [probe.expert32(e) for e in range(expert + 1, stop)])
            a = importance[expert:stop] if importance is not None else mx.ones((w.shape[-1],), dtype=mx.float32)
            values = round_trip(stack, group_size, bits, a, dtype, None if hessian is None else hessian[expert:stop])
            mx.eval(values)
            block.update(first=expert, stop=stop, values=values)
        return block["values"][expert - block["first"]]

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
                  stats, bits_options, group_size: int, dtype,
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
                path = probe._unit.path
                probe.replace = _replacement(probe, stats.importance(path), stats.hessian(path), group_size, bits,
                                             dtype)
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
