"""GPTQ for units whose full input covariance is small enough to keep: error feedback across columns.

    gptq_quantize(w, group_size, bits, hessian, dtype) -> (packed, scales, biases)

Where the calibration pass kept ``H = X^T X`` for a unit (its input dimension
small enough, see `stats.FULL_HESSIAN_BYTES`), the quantized values are chosen
column by column, each column's rounding error pushed onto the columns not
yet quantized through the Cholesky factor of ``H^-1`` (Frantar et al., 2022),
in blocks of one quantization group: the group's scale and bias are chosen
(by `quantizer.calibrated_quantize`'s search, weighted by ``diag(H)``) from
the group's columns as the earlier groups' errors left them. Then, row by
row, whichever of GPTQ's and the plain calibrated choice has the smaller
output error ``dW H dW^T`` is kept, so this is never worse than the diagonal
method on the calibration tokens. Same tensors as `mx.quantize`.
"""

from __future__ import annotations

import numpy as np

from studio.core.calibration.quantizer import calibrated_quantize, pack
from studio.core.quant_error.round_trip import dequantize_float32

DAMP = 0.05  # of the mean diagonal, added to H: keeps the inverse stable for rarely seen channels


def _group_params(wg: np.ndarray, ag: np.ndarray, group_size: int, bits: int, dtype):
    """Scale and bias (float32, rounded to dtype) of one group's columns, by the calibrated search."""
    import mlx.core as mx

    _, s, b = calibrated_quantize(mx.array(wg), group_size, bits, mx.array(ag), dtype)
    return np.asarray(s.astype(mx.float32))[..., 0], np.asarray(b.astype(mx.float32))[..., 0]


def _output_error(dw: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Per row of dw [..., out, in]: dw H dw^T."""
    return np.einsum("...oi,...ij,...oj->...o", dw, h, dw, optimize=True)


def gptq_quantize(w, group_size: int, bits: int, hessian, dtype):
    import mlx.core as mx

    w32 = np.asarray(w.astype(mx.float32), dtype=np.float64)
    h = np.asarray(hessian, dtype=np.float64)
    batch = w32.shape[:-2]
    out, inputs = w32.shape[-2:]
    nmax = 2**bits - 1
    diag = np.diagonal(h, axis1=-2, axis2=-1)
    damp = DAMP * np.maximum(diag.mean(axis=-1, keepdims=True), 1e-12)
    hd = h + np.eye(inputs) * damp[..., None]
    dead = diag <= 0
    hd[..., np.arange(inputs), np.arange(inputs)] += dead * 1.0
    u = np.linalg.cholesky(np.linalg.inv(hd)).swapaxes(-1, -2)  # upper factor of H^-1
    work = w32.copy()
    levels = np.zeros_like(work)
    scales = np.zeros((*batch, out, inputs // group_size))
    biases = np.zeros_like(scales)
    importance = np.broadcast_to(diag[..., None, :], work.shape)
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
    del importance
    deq = levels * np.repeat(scales, group_size, axis=-1) + np.repeat(biases, group_size, axis=-1)

    plain = calibrated_quantize(w, group_size, bits, mx.array(diag.astype(np.float32)), dtype)
    # In float32 (see dequantize_float32): a bfloat16 dequantize is off by up to half a level at 8 bits.
    plain_deq = np.asarray(dequantize_float32(plain, bits, group_size), dtype=np.float64)
    better = _output_error(deq - w32, h) < _output_error(plain_deq - w32, h)  # [..., out]
    packed = np.where(better[..., None], np.asarray(pack(mx.array(levels.astype(np.uint32)), bits)),
                      np.asarray(plain[0]))
    s_out = np.where(better[..., None], scales, np.asarray(plain[1].astype(mx.float32)))
    b_out = np.where(better[..., None], biases, np.asarray(plain[2].astype(mx.float32)))
    return (mx.array(packed.astype(np.uint32)), mx.array(s_out.astype(np.float32)).astype(dtype),
            mx.array(b_out.astype(np.float32)).astype(dtype))
