"""relative_error: the round-trip error of one quantization setting on one tensor."""

import math

import mlx.core as mx
import numpy as np
import pytest

from studio.core.quant_error.round_trip import relative_error, relative_error_per_expert


def _normal(shape, seed=0):
    return mx.array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def _by_hand(w, bits, group_size, mode):
    """The definition, on the whole tensor at once, with the norms taken in numpy float64."""
    parts = mx.quantize(w, group_size=group_size, bits=bits, mode=mode)
    back = mx.dequantize(*parts, group_size=group_size, bits=bits, mode=mode, dtype=mx.float32)
    a, b = np.array(w, dtype=np.float64), np.array(back, dtype=np.float64)
    return np.linalg.norm(b - a) / np.linalg.norm(a)


def test_mxfp8_is_exact_for_representable_values():
    # e4m3 holds 1, 1.125, ..., 1.75 times powers of two; every group of 32 has
    # |max| = 7 so the shared power-of-two scale loses nothing.
    rng = np.random.default_rng(1)
    vals = rng.choice([0, 0.5, -0.625, 1, -1.125, 1.25, 1.5, -1.75, 2, -3, 3.5, 4, -6], size=(16, 128))
    vals[:, ::32] = 7.0
    w = mx.array((vals * 2.0**-6).astype(np.float32))
    assert relative_error(w, 8, 32, "mxfp8") < 1e-7
    # ...and not exact for values between the grid points, so the check above can fail.
    assert relative_error(_normal((16, 128)), 8, 32, "mxfp8") > 1e-3


def test_error_decreases_as_bits_increase():
    w = _normal((64, 256))
    e2, e4, e8 = (relative_error(w, b, 64, "affine") for b in (2, 4, 8))
    assert e2 > e4 > e8 > 0
    # Each extra bit roughly halves the step size: 2 -> 4 bits is ~4x, 4 -> 8 bits ~16x.
    assert e2 / e4 > 3 and e4 / e8 > 10


@pytest.mark.parametrize("bits,group,mode", [(2, 64, "affine"), (4, 32, "mxfp4"), (4, 16, "nvfp4"), (8, 32, "mxfp8")])
def test_matches_the_definition(bits, group, mode):
    w = _normal((3, 32, 128), seed=2)
    assert relative_error(w, bits, group, mode) == pytest.approx(_by_hand(w, bits, group, mode), rel=1e-5)


def test_chunked_equals_unchunked_for_stacked_experts():
    w = _normal((10, 48, 128), seed=3)
    whole = _by_hand(w, 3, 64, "affine")
    for chunk in (1, 3, 4, 10, 64, None):
        assert relative_error(w, 3, 64, "affine", chunk_experts=chunk) == pytest.approx(whole, rel=1e-5)


def test_per_expert_figures():
    x = np.random.default_rng(4).standard_normal((5, 32, 128)).astype(np.float32)
    x[2, :, ::64] *= 20  # one outlier per group: the other 63 values share a coarse step
    w = mx.array(x)
    per = relative_error_per_expert(w, 4, 64, "affine", chunk_experts=2)
    assert per.shape == (5,)
    for e in range(5):
        assert per[e] == pytest.approx(relative_error(w[e], 4, 64, "affine"), rel=1e-5)
    assert per.argmax() == 2 and per[2] > 1.5 * np.delete(per, 2).max()
    # The combined figure is the energy-weighted mean, not the plain mean, of the experts' figures.
    sq = (x.astype(np.float64) ** 2).sum(axis=(1, 2))
    assert relative_error(w, 4, 64, "affine") == pytest.approx(math.sqrt((per**2 * sq).sum() / sq.sum()), rel=1e-5)


def test_bf16_input_is_measured_in_float32():
    w = _normal((32, 128), seed=5).astype(mx.bfloat16)
    assert relative_error(w, 4, 64, "affine") == pytest.approx(_by_hand(w.astype(mx.float32), 4, 64, "affine"),
                                                               rel=1e-5)


def test_zero_tensor_and_bad_settings():
    assert relative_error(mx.zeros((4, 64)), 4, 64, "affine") == 0.0
    with pytest.raises(ValueError, match="not divisible"):
        relative_error(_normal((4, 96)), 4, 64, "affine")
    with pytest.raises(ValueError, match="unknown quantization mode"):
        relative_error(_normal((4, 64)), 4, 64, "int4")
    with pytest.raises(ValueError):
        relative_error(_normal((4, 64)), 3, 32, "mxfp4")


def test_8bit_error_with_bfloat16_scales_is_the_formats_own():
    """The bf16-scaled round trip (what the converter writes) is measured from the exact stored values
    scale * level + bias, not from a bfloat16 dequantize, which is off by up to half a level at 8 bits."""
    w = _normal((64, 256), seed=5) * 0.02
    q, s, b = mx.quantize(w.astype(mx.bfloat16), group_size=64, bits=8)
    levels = np.asarray(q).view(np.uint8).astype(np.float64)  # 8 bits: one level a byte, little-endian
    scale = np.repeat(np.asarray(s.astype(mx.float32), dtype=np.float64), 64, axis=-1)
    bias = np.repeat(np.asarray(b.astype(mx.float32), dtype=np.float64), 64, axis=-1)
    a = np.asarray(w, dtype=np.float64)
    exact = np.linalg.norm(scale * levels + bias - a) / np.linalg.norm(a)
    assert relative_error(w, 8, 64, dtype=mx.bfloat16) == pytest.approx(exact, rel=1e-4)
