"""How much one quantization setting damages one tensor, before converting anything.

The figure is the relative Frobenius error of a round trip through MLX's own
kernels: ``||dequantize(quantize(w)) - w||_F / ||w||_F``, computed in float32.
0 means lossless; 0.01 is 1% of the tensor's energy lost to rounding.

Stacked expert tensors ``[E, out, in]`` are processed a few experts at a time
so memory stays bounded by one chunk, not by the whole tensor; the combined
figure is ``sqrt(sum of squared errors / sum of squares)`` over all experts,
which equals the figure of the whole tensor at once.
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np

MODES = ("affine", "mxfp4", "nvfp4", "mxfp8")

# Elements (float32) one chunk of experts may hold; the round trip needs a few
# copies of it, so this keeps the peak at a few hundred MB whatever E is.
DEFAULT_CHUNK_ELEMENTS = 32 * 1024 * 1024


def _check(w: mx.array, bits: int, group_size: int, mode: str) -> None:
    # Which bits and group sizes each mode takes is MLX's business: mx.quantize
    # raises ValueError for a combination it does not support.
    if mode not in MODES:
        raise ValueError(f"unknown quantization mode {mode!r}; expected one of {', '.join(MODES)}")
    if w.ndim < 2:
        raise ValueError(f"only matrices and stacked matrices quantize; got shape {tuple(w.shape)}")
    if w.shape[-1] % group_size != 0:
        raise ValueError(
            f"input dimension {w.shape[-1]} is not divisible by the group size {group_size}; "
            "MLX leaves such a tensor unquantized"
        )


def dequantize_float32(parts, bits: int, group_size: int, mode: str = "affine") -> mx.array:
    """The exact values quantized `parts` (what ``mx.quantize`` returned) stand for, in float32.

    ``mx.dequantize(..., dtype=mx.float32)`` alone is not enough: with bfloat16
    scales and biases MLX computes ``scale * level + bias`` in bfloat16 and only
    then casts, which keeps 8 significant bits, so at 8 bits the result is off
    by up to half a level and a round trip looks worse than the format is. The
    float scales and biases are cast first (the E8M0 / FP8 scales of the mx and
    nv modes are integers and stay as they are)."""
    def f32(a):
        return a.astype(mx.float32) if a is not None and mx.issubdtype(a.dtype, mx.floating) else a

    q, scales = parts[0], parts[1]
    biases = parts[2] if len(parts) > 2 else None
    return mx.dequantize(q, f32(scales), f32(biases), group_size=group_size, bits=bits, mode=mode,
                         dtype=mx.float32)


def round_trip_sums(reference: mx.array, parts, bits: int, group_size: int, mode: str,
                    axes: tuple[int, ...] | None = None) -> tuple[mx.array, mx.array]:
    """(sum of squared errors, sum of squares) of `reference` against the dequantized `parts`.

    `parts` is what ``mx.quantize`` returned for (a cast of) `reference`; sums
    run over `axes` (all, by default) in float32 and stay lazy, so a caller can
    evaluate them together with the quantized output it writes.
    """
    ref = reference.astype(mx.float32)
    back = dequantize_float32(parts, bits, group_size, mode)
    return mx.sum(mx.square(back - ref), axis=axes), mx.sum(mx.square(ref), axis=axes)


def _round_trip_sums(w: mx.array, bits: int, group_size: int, mode: str, dtype=None) -> tuple[mx.array, mx.array]:
    """Per leading index and row: (sum of squared errors, sum of squares), float32, lazy."""
    # Quantizing in the output dtype (bf16 scales, as the converter writes them)
    # measures the file's error; the reference stays the float input.
    x = w.astype(mx.float32 if dtype is None else dtype)
    parts = mx.quantize(x, group_size=group_size, bits=bits, mode=mode)
    # Per row in float32 (the caller adds rows in float64): a float32 sum over a
    # whole expert loses digits the 1e-4 comparisons with the converter need.
    return round_trip_sums(w, parts, bits, group_size, mode, axes=(-1,))


def _expert_sums(
    w: mx.array, bits: int, group_size: int, mode: str, chunk_experts: int | None, dtype=None
) -> tuple[np.ndarray, np.ndarray]:
    """(squared errors, squares) per expert as float64, for [E, out, in]; a 2-D tensor is one expert."""
    _check(w, bits, group_size, mode)
    if w.ndim == 2:
        w = w[None]
    elif w.ndim > 3:
        w = w.reshape(-1, *w.shape[-2:])
    experts = w.shape[0]
    per_expert = w.shape[1] * w.shape[2]
    if chunk_experts is None:
        chunk_experts = max(1, DEFAULT_CHUNK_ELEMENTS // max(per_expert, 1))
    chunk_experts = max(1, int(chunk_experts))
    err = np.empty(experts, dtype=np.float64)
    ref = np.empty(experts, dtype=np.float64)
    for start in range(0, experts, chunk_experts):
        stop = min(start + chunk_experts, experts)
        e, r = _round_trip_sums(w[start:stop], bits, group_size, mode, dtype)
        mx.eval(e, r)
        err[start:stop] = np.array(e, dtype=np.float64).sum(axis=-1)
        ref[start:stop] = np.array(r, dtype=np.float64).sum(axis=-1)
    return err, ref


def relative_error(
    w: mx.array, bits: int, group_size: int, mode: str = "affine", *, chunk_experts: int | None = None,
    dtype=None,
) -> float:
    """||dequantize(quantize(w)) - w||_F / ||w||_F in float32 (0.0 for an all-zero tensor).

    ``w`` is ``[out, in]`` or stacked experts ``[E, out, in]``; the latter runs
    ``chunk_experts`` experts at a time (default: as many as fit in ~128 MB).
    ``dtype`` (e.g. ``mx.bfloat16``) quantizes ``w`` cast to it, as the converter
    does, against ``w`` itself; by default the round trip is all float32.
    """
    err, ref = _expert_sums(w, bits, group_size, mode, chunk_experts, dtype)
    total_ref = float(ref.sum())
    if total_ref == 0.0:
        return 0.0
    return math.sqrt(float(err.sum()) / total_ref)


def relative_error_per_expert(
    w: mx.array, bits: int, group_size: int, mode: str = "affine", *, chunk_experts: int | None = None
) -> np.ndarray:
    """The relative error of each expert of ``[E, out, in]`` (float64 array of length E)."""
    err, ref = _expert_sums(w, bits, group_size, mode, chunk_experts)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.sqrt(np.where(ref > 0, err / np.where(ref > 0, ref, 1.0), 0.0))
    return out
