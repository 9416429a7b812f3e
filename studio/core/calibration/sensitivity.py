"""Sensitivity in one unit: the KL divergence (nats per token) that quantizing one cell alone adds
to the model's next-token distribution, measured streamed, one decoder layer at a time.

A cell (role, layer) quantized at some bits moves its layer's output, the
residual stream, by d: `measure_layer` quantizes that cell alone with the
calibrated quantizer and measures the mean over probe tokens of ||d||^2. What
d costs at the logits depends on where it enters: it still has to pass every
later layer. So once per layer the pass also quantizes the whole layer (every
cell at REFERENCE_BITS), carries that perturbed stream through the remaining
float layers to the logits (`propagation.Propagation`) and divides the KL it
causes there by its ||d||^2: the layer's gain, nats per unit of squared
perturbation. A cell's sensitivity is its layer's gain times its own ||d||^2.
This is the second-order model of the final KL (KL of a small perturbation is
quadratic in it) with one curvature per layer, along the directions
quantization actually perturbs; errors of different cells are independent, so
their KLs add, which is what lets the knapsack sum them.

The embedding gets its gain the same way, from a perturbed first-layer input;
the head is measured exactly (KL of the logits with the head alone quantized),
and so is a tied embedding's second use as the head, which adds to its input
side. Every cell, embedding, blocks and head, is thus in nats per token.

The layer-local relative output error (the measure before this one) is kept
beside it as `output_error`, for comparison (bench/bench_sensitivity.py).
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from typing import Callable

import mlx.core as mx
import numpy as np

from studio.core.calibration.gptq import gptq_quantize
from studio.core.calibration.logits_kl import HEAD_ROWS, OnlineKL
from studio.core.calibration.quantizer import calibrated_quantize
from studio.core.model.unit import Unit

REFERENCE_BITS = 4  # the whole-layer perturbation a layer's gain is measured with
UNIT = "KL divergence of the next-token distribution, nats per token"


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


def layer_cells(probes: dict, group_size: int) -> dict[tuple, list]:
    cells = defaultdict(list)
    for probe in probes.values():
        unit: Unit = probe._unit
        if unit.quantizable(group_size):
            cells[(unit.role, unit.layer)].append(probe)
    return dict(cells)


@contextmanager
def quantized(members, stats, bits: int, group_size: int, dtype):
    """The probes `members` compute with their weights quantized at `bits` while inside."""
    for probe in members:
        path = probe._unit.path
        probe.replace = _replacement(probe, stats.importance(path), stats.hessian(path), group_size, bits, dtype)
    try:
        yield
    finally:
        for probe in members:
            probe.replace = None


def squared_change(y: mx.array, ref: mx.array) -> float:
    """Mean over tokens of ||y - ref||^2 (y, ref [..., hidden])."""
    tokens = max(1, ref.size // ref.shape[-1])
    return mx.sum(mx.square(y - ref)).item() / tokens


def measure_layer(run: Callable[[mx.array], mx.array], probes: dict, x: mx.array, reference: mx.array,
                  stats, bits_options, group_size: int, dtype,
                  check_cancel: Callable[[], None]) -> dict[tuple, dict[int, float]]:
    """{cell: {bits: mean ||output change||^2 per token}} for every measurable cell of one layer."""
    out = {}
    for probe in probes.values():
        probe.recording = False
    for cell, members in layer_cells(probes, group_size).items():
        out[cell] = {}
        for bits in bits_options:
            check_cancel()
            with quantized(members, stats, bits, group_size, dtype):
                out[cell][bits] = squared_change(run(x), reference)
    return out


def whole_layer(run: Callable[[mx.array], mx.array], probes: dict, x: mx.array, stats, group_size: int,
                dtype) -> mx.array | None:
    """The layer's output on x with every measurable cell at REFERENCE_BITS; None if it has none."""
    members = [p for cell in layer_cells(probes, group_size).values() for p in cell]
    if not members:
        return None
    with quantized(members, stats, REFERENCE_BITS, group_size, dtype):
        return run(x)


def embedding_change(table: mx.array, tokens: np.ndarray, bits_options, group_size: int,
                     dtype) -> tuple[dict[int, float], float]:
    """({bits: mean ||embedding change||^2 per token}, mean ||embedding||^2 per token), each row
    counted as often as it occurs in `tokens`."""
    ids, counts = np.unique(tokens.reshape(-1), return_counts=True)
    rows = table[mx.array(ids)].astype(mx.float32)
    weight = mx.array(counts.astype(np.float32))[:, None]
    total = float(counts.sum())
    ones = mx.ones((rows.shape[-1],), dtype=mx.float32)
    out = {}
    for bits in bits_options:
        deq = round_trip(rows, group_size, bits, ones, dtype)
        out[bits] = mx.sum(weight * mx.square(deq - rows)).item() / total
    return out, mx.sum(weight * mx.square(rows)).item() / total


def head_kl(weight: mx.array, h: mx.array, importance, bits_options, group_size: int,
            dtype) -> tuple[dict[int, float], dict[int, float]]:
    """({bits: mean KL of the logits with the head quantized}, {bits: their relative squared error})
    on final hidden states `h` [tokens, hidden]; the head (or tied embedding) `weight` [vocab, hidden]."""
    kl = {bits: OnlineKL() for bits in bits_options}
    err = {bits: 0.0 for bits in bits_options}
    den = 0.0
    if importance is None:
        importance = mx.ones((weight.shape[-1],), dtype=mx.float32)
    for first in range(0, weight.shape[0], HEAD_ROWS):
        w = weight[first:first + HEAD_ROWS].astype(mx.float32)
        ref = h @ w.T
        den += mx.sum(mx.square(ref)).item()
        for bits in bits_options:
            out = h @ round_trip(w, group_size, bits, importance, dtype).T
            kl[bits].update(ref, out)
            err[bits] += mx.sum(mx.square(out - ref)).item()
    return ({bits: acc.mean() for bits, acc in kl.items()},
            {bits: e / den if den > 0 else 0.0 for bits, e in err.items()})
