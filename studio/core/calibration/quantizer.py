"""Calibrated affine quantization: each group's scale and bias chosen for the output, not the weights.

    calibrated_quantize(w, group_size, bits, importance, dtype) -> (packed uint32, scales, biases)

Same tensors as `mx.quantize(w.astype(dtype), group_size, bits)`: the packed
values (little-endian bit stream in uint32 words, MLX's layout), scales and
biases in the model's float dtype, same shapes and bytes. Only the numbers
differ: a layer's output error from a weight error is
``sum_j x_j * dW_j``, whose expected square under uncorrelated inputs is
``sum_j E[x_j^2] dW_j^2``. So each group minimises its squared error weighted
by the mean squared activation of each input channel (`importance`, from the
calibration pass), the diagonal of ``X^T X`` that llama.cpp's imatrix uses.

Per group: try a range of clipping ranges (the candidate grids of llama.cpp's
`make_qkx` family), fit scale and bias to each candidate's integers by weighted
least squares, round both to the output dtype, re-round the integers to them,
and keep the candidate with the least weighted error; MLX's own round-to-nearest
is one of the candidates, so a group is never worse than plain conversion under
that measure.
"""

from __future__ import annotations

import numpy as np

# Candidate clipping ranges: (max - min) shrunk or stretched by these many steps of
# `STEP` quantization bins around the plain range.
STEPS = 10
STEP = 0.2
SHIFTS = (-1.0,)  # the low end starts this many steps below; see _candidates


def _mx():
    import mlx.core as mx

    return mx


def weighted_error(w, w_hat, importance):
    """Per-group sum over the group of importance * (w - w_hat)^2; all [..., groups, gs]."""
    mx = _mx()
    return mx.sum(importance * mx.square(w - w_hat), axis=-1)


def _fit(wg, ag, levels, nmax, dtype):
    """Weighted least-squares scale and bias for integer `levels`, rounded to `dtype`,
    then the integers re-rounded to the rounded scale and bias."""
    mx = _mx()
    d = mx.sum(ag, axis=-1)
    sl = mx.sum(ag * levels, axis=-1)
    sl2 = mx.sum(ag * levels * levels, axis=-1)
    sx = mx.sum(ag * wg, axis=-1)
    sxl = mx.sum(ag * wg * levels, axis=-1)
    det = d * sl2 - sl * sl
    ok = det > 1e-30 * mx.maximum(d * sl2, 1e-30)
    safe = mx.where(ok, det, 1.0)
    scale = mx.where(ok, (d * sxl - sx * sl) / safe, 0.0)
    bias = mx.where(ok, (sl2 * sx - sl * sxl) / safe, sx / mx.maximum(d, 1e-30))
    return _requantize(wg, scale, bias, nmax, dtype)


def _requantize(wg, scale, bias, nmax, dtype):
    """Round scale and bias to the output dtype, then the best integers for them."""
    mx = _mx()
    scale = scale.astype(dtype).astype(mx.float32)
    bias = bias.astype(dtype).astype(mx.float32)
    safe = mx.where(mx.abs(scale) > 0, scale, 1.0)
    levels = mx.clip(mx.round((wg - bias[..., None]) / safe[..., None]), 0, nmax)
    levels = mx.where((mx.abs(scale) > 0)[..., None], levels, 0)
    return scale, bias, levels


def _rtn(w, group_size, bits, dtype):
    """MLX's own round-to-nearest, as (scale, bias, levels) per group.

    The levels are read back from a float32 dequantize (`dequantize_float32`): in
    bfloat16 ``s * l + b`` keeps 8 significant bits, so at 6 and 8 bits the
    candidate's error was measured off the true RTN values, and a group could
    end up worse than plain conversion."""
    from studio.core.quant_error.round_trip import dequantize_float32

    mx = _mx()
    q, s, b = mx.quantize(w.astype(dtype), group_size, bits)
    deq = dequantize_float32((q, s, b), bits, group_size)
    shape = (*w.shape[:-1], w.shape[-1] // group_size)
    scale, bias = s.astype(mx.float32).reshape(shape), b.astype(mx.float32).reshape(shape)
    wg = deq.reshape(*shape, group_size)
    safe = mx.where(mx.abs(scale) > 0, scale, 1.0)
    levels = mx.clip(mx.round((wg - bias[..., None]) / safe[..., None]), 0, 2**bits - 1)
    return scale, bias, levels


PACK_BLOCK_VALUES = 2**20  # pack()'s values at a time


def pack(levels, bits: int):
    """Integers in [0, 2^bits) along the last axis -> MLX's packed uint32 words."""
    mx = _mx()
    width = levels.shape[-1]
    flat = levels.reshape(-1, width)
    # A block of rows at a time: the bit planes take 4 x bits bytes a value in numpy.
    step = max(PACK_BLOCK_VALUES // width, 1)
    words = [_pack_rows(np.asarray(flat[a:a + step].astype(mx.uint32)), bits) for a in range(0, flat.shape[0], step)]
    packed = np.concatenate(words) if len(words) > 1 else words[0]
    return mx.array(packed.reshape(*levels.shape[:-1], packed.shape[-1]))


def _pack_rows(values: np.ndarray, bits: int) -> np.ndarray:
    bit_planes = ((values[..., None] >> np.arange(bits, dtype=np.uint32)) & 1).astype(np.uint8)
    packed = np.packbits(bit_planes.reshape(values.shape[0], values.shape[1] * bits), axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u4")


# Rows are searched this many values at a time: the search holds about twenty float32 copies of what
# it works on, so a 29,127 x 576 embedding chunk took 1.3 GB at once (bench_calibration_methods.py,
# SmolLM2's first 8 layers: calibrated conversion peak 1,148 MB, 456 MB in blocks, plain 229 MB); in
# blocks the search stays near 20 x 4 bytes x this.
BLOCK_VALUES = 2**21


def calibrated_quantize(w, group_size: int, bits: int, importance, dtype=None):
    """`mx.quantize`'s three tensors for `w` [..., out, in], chosen to minimise the
    importance-weighted error. `importance` broadcasts against w's [..., in] without
    the out axis: shape [in] or [experts, in] for a stacked [experts, out, in] weight."""
    mx = _mx()
    rows = max(BLOCK_VALUES // max(w.size // w.shape[-2], 1), 1)
    if w.shape[-2] <= rows:
        return _search(w, group_size, bits, importance, dtype)
    parts = [_search(w[..., a:a + rows, :], group_size, bits, importance, dtype)
             for a in range(0, w.shape[-2], rows)]
    return tuple(mx.concatenate([part[i] for part in parts], axis=-2) for i in range(3))


def _search(w, group_size: int, bits: int, importance, dtype=None):
    mx = _mx()
    dtype = dtype or w.dtype
    w = w.astype(mx.float32)
    nmax = 2**bits - 1
    groups = w.shape[-1] // group_size
    shape = (*w.shape[:-1], groups, group_size)
    wg = w.reshape(shape)
    a = importance.astype(mx.float32)
    a = a.reshape(*a.shape[:-1], 1, groups, group_size)  # the out axis broadcasts
    a = a + 1e-6 * mx.maximum(mx.mean(a, axis=(-2, -1), keepdims=True), 1e-30)

    best_scale, best_bias, best_levels = _rtn(w, group_size, bits, dtype)
    best_err = weighted_error(wg, best_scale[..., None] * best_levels + best_bias[..., None], a)
    lo, hi = mx.min(wg, axis=-1), mx.max(wg, axis=-1)
    span = mx.maximum(hi - lo, 1e-30)
    for step in range(STEPS + 1):
        # Shrinking the range clips outliers the activations say matter little.
        for shift in SHIFTS:
            iscale = (nmax + STEP * (step + shift * STEPS / 2)) / span
            iscale = mx.maximum(iscale, 1e-30)
            levels = mx.clip(mx.round(iscale[..., None] * (wg - lo[..., None])), 0, nmax)
            scale, bias, levels = _fit(wg, a, levels, nmax, dtype)
            # One more refit on the re-rounded integers: about 10% less error at 2 bits.
            scale, bias, levels = _fit(wg, a, levels, nmax, dtype)
            err = weighted_error(wg, scale[..., None] * levels + bias[..., None], a)
            better = err < best_err
            best_err = mx.where(better, err, best_err)
            best_scale = mx.where(better, scale, best_scale)
            best_bias = mx.where(better, bias, best_bias)
            best_levels = mx.where(better[..., None], levels, best_levels)
            mx.eval(best_err, best_scale, best_bias, best_levels)
    packed = pack(best_levels.reshape(w.shape), bits)
    return packed, best_scale.astype(dtype), best_bias.astype(dtype)
