"""GPTQ: error feedback across columns, for plain units and for every routed expert of a stacked one.

    gptq_quantize(w, group_size, bits, hessian, dtype) -> (packed, scales, biases)

`hessian` is ``H = X^T X`` (mean) [in, in] or [..., in, in] for `w` [..., out, in],
or an `expert_hessians.ExpertHessians` for a stacked [experts, out, in] weight,
which says per expert whether it is quantized with its own Hessian, the pooled
one shrunk toward it, or clipping alone (`quantize_experts`).

The quantized values are chosen column by column, each column's rounding error
pushed onto the columns not yet quantized through the Cholesky factor of
``H^-1`` (Frantar et al., 2022), in blocks of one quantization group: the
group's scale and bias are chosen (by `quantizer.calibrated_quantize`'s
search, weighted by ``diag(H)``) from the group's columns as the earlier
groups' errors left them. Then, row by row, whichever of GPTQ's and the plain
calibrated choice has the smaller output error ``dW H dW^T`` is kept, so this
is never worse than the diagonal method on the calibration tokens. Same
tensors as `mx.quantize` (packed uint32, scales and biases in `dtype`), so the
output is stock MLX and its size the estimate's to the byte.
"""

from __future__ import annotations

import numpy as np

from studio.core.calibration.expert_hessians import CLIP, DAMP, OWN, ExpertHessians
from studio.core.calibration.quantizer import calibrated_quantize, pack
from studio.core.quant_error.round_trip import dequantize_float32


def _group_params(wg: np.ndarray, ag: np.ndarray, group_size: int, bits: int, dtype):
    """Scale and bias (float32, rounded to dtype) of one group's columns, by the calibrated search."""
    import mlx.core as mx

    _, s, b = calibrated_quantize(mx.array(wg), group_size, bits, mx.array(ag), dtype)
    return np.asarray(s.astype(mx.float32))[..., 0], np.asarray(b.astype(mx.float32))[..., 0]


def _output_error(dw: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Per row of dw [..., out, in]: dw H dw^T."""
    return np.einsum("...oi,...ij,...oj->...o", dw, h, dw, optimize=True)


def _upper_inverse_factor(h: np.ndarray) -> np.ndarray:
    """Upper Cholesky factor of the damped H^-1 (a channel no token moved gets a unit diagonal)."""
    inputs = h.shape[-1]
    diag = np.diagonal(h, axis1=-2, axis2=-1)
    damp = DAMP * np.maximum(diag.mean(axis=-1, keepdims=True), 1e-12)
    hd = h + np.eye(inputs) * damp[..., None]
    hd[..., np.arange(inputs), np.arange(inputs)] += (diag <= 0) * 1.0
    return np.linalg.cholesky(np.linalg.inv(hd)).swapaxes(-1, -2)


def _error_feedback(w32: np.ndarray, diag: np.ndarray, u: np.ndarray, group_size: int, bits: int, dtype):
    """GPTQ's column loop: integer levels, scales and biases for w32 [..., out, in] (float64)."""
    batch = w32.shape[:-2]
    out, inputs = w32.shape[-2:]
    nmax = 2**bits - 1
    work = w32.copy()
    levels = np.zeros_like(work)
    scales = np.zeros((*batch, out, inputs // group_size))
    biases = np.zeros_like(scales)
    for g in range(inputs // group_size):
        a, z = g * group_size, (g + 1) * group_size
        s, b = _group_params(work[..., a:z].astype(np.float32), diag[..., a:z].astype(np.float32),
                             group_size, bits, dtype)
        scales[..., g], biases[..., g] = s, b
        safe = np.where(s != 0, s, 1.0)
        errors = np.zeros((*batch, out, group_size))
        for j in range(a, z):
            q = np.clip(np.rint((work[..., j] - b) / safe), 0, nmax)
            q = np.where(s != 0, q, 0)
            levels[..., j] = q
            err = (work[..., j] - (q * s + b)) / u[..., j, j][..., None]
            work[..., j + 1:z] -= err[..., None] * u[..., j, None, j + 1:z]
            errors[..., j - a] = err
        if z < inputs:
            work[..., z:] -= errors @ u[..., a:z, z:]
    return levels, scales, biases


def _keep_better(w, w32, found, diag, output_error, group_size: int, bits: int, dtype) -> tuple:
    """Per row, GPTQ's choice `found` or the plain calibrated one, whichever `output_error` says is smaller."""
    import mlx.core as mx

    levels, scales, biases = found
    deq = levels * np.repeat(scales, group_size, axis=-1) + np.repeat(biases, group_size, axis=-1)
    plain = calibrated_quantize(w, group_size, bits, mx.array(diag.astype(np.float32)), dtype)
    # In float32 (see dequantize_float32): a bfloat16 dequantize is off by up to half a level at 8 bits.
    plain_deq = np.asarray(dequantize_float32(plain, bits, group_size), dtype=np.float64)
    better = output_error(deq - w32) < output_error(plain_deq - w32)  # [..., out]
    packed = np.where(better[..., None], np.asarray(pack(mx.array(levels.astype(np.uint32)), bits)),
                      np.asarray(plain[0]))
    s_out = np.where(better[..., None], scales, np.asarray(plain[1].astype(mx.float32)))
    b_out = np.where(better[..., None], biases, np.asarray(plain[2].astype(mx.float32)))
    return (mx.array(packed.astype(np.uint32)), mx.array(s_out.astype(np.float32)).astype(dtype),
            mx.array(b_out.astype(np.float32)).astype(dtype))


def gptq_quantize(w, group_size: int, bits: int, hessian, dtype):
    if isinstance(hessian, ExpertHessians):
        return quantize_experts(w, group_size, bits, hessian, dtype)
    import mlx.core as mx

    w32 = np.asarray(w.astype(mx.float32), dtype=np.float64)
    h = np.asarray(hessian, dtype=np.float64)
    diag = np.diagonal(h, axis1=-2, axis2=-1)
    found = _error_feedback(w32, diag, _upper_inverse_factor(h), group_size, bits, dtype)
    return _keep_better(w, w32, found, diag, lambda dw: _output_error(dw, h), group_size, bits, dtype)


def _pooled_expert(w, hessians: ExpertHessians, e: int, group_size: int, bits: int, dtype):
    """GPTQ under the prior D^1/2 R D^1/2 without forming it: the factor is the projection's, scaled."""
    import mlx.core as mx

    w32 = np.asarray(w.astype(mx.float32), dtype=np.float64)
    d = hessians.floored_scales(e)
    root = np.sqrt(d)
    u = hessians.pooled_factor() / root[None, :]
    corr = hessians.corr

    def output_error(dw):
        scaled = dw * root
        return np.einsum("oi,ij,oj->o", scaled, corr, scaled, optimize=True)

    found = _error_feedback(w32, d, u, group_size, bits, dtype)
    return _keep_better(w, w32, found, d, output_error, group_size, bits, dtype)


def quantize_experts(w, group_size: int, bits: int, hessians: ExpertHessians, dtype):
    """`mx.quantize`'s tensors for a stacked weight [experts, out, in], each expert by its method: GPTQ
    with its own Hessian (OWN), with the pooled one shrunk toward it (POOLED), or the clipping search
    (CLIP, all such experts in one call). One expert's [in, in] in float64 at a time."""
    import mlx.core as mx

    experts = w.shape[0]
    assert len(hessians) == experts, (len(hessians), experts)
    results: list = [None] * experts
    clip = [e for e in range(experts) if hessians.methods[e] == CLIP]
    if clip:
        q = calibrated_quantize(w[mx.array(clip)], group_size, bits, mx.array(hessians.scales[clip], dtype=mx.float32),
                                dtype)
        for i, e in enumerate(clip):
            results[e] = (q[0][i], q[1][i], q[2][i])
    for e in range(experts):
        if results[e] is not None:
            continue
        if hessians.methods[e] == OWN or hessians.own is not None:
            results[e] = gptq_quantize(w[e], group_size, bits, hessians.dense(e), dtype)
        else:
            results[e] = _pooled_expert(w[e], hessians, e, group_size, bits, dtype)
        mx.eval(*results[e])
    return tuple(mx.stack([r[i] for r in results]) for i in range(3))
