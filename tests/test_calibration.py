"""Calibrated quantization, the streamed calibration pass, and the output-space knapsack."""

import itertools
import json
import random

import mlx.core as mx
import numpy as np
import pytest

from studio.core.budget.solve import solve
from studio.core.calibration.quantizer import calibrated_quantize, pack
from studio.core.errors import StudioError

TOKENS = dict(sequences=4, length=32)  # a tiny pass: 128 tokens (too few for GPTQ: the diagonal method)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 8])
def test_packing_is_mlx_layout(bits):
    rng = np.random.default_rng(bits)
    levels = mx.array(rng.integers(0, 2**bits, size=(3, 128)).astype(np.uint32))
    scales = mx.ones((3, 2), dtype=mx.float32)
    biases = mx.zeros((3, 2), dtype=mx.float32)
    back = mx.dequantize(pack(levels, bits), scales, biases, 64, bits)
    assert np.array_equal(np.asarray(back), np.asarray(levels).astype(np.float32))


@pytest.mark.parametrize("bits", [3, 4])
def test_packing_in_row_blocks_is_mlx_layout_for_stacked_experts(monkeypatch, bits):
    from studio.core.calibration import quantizer

    monkeypatch.setattr(quantizer, "PACK_BLOCK_VALUES", 7 * 128)  # 7 rows a block: ragged, across experts
    rng = np.random.default_rng(bits)
    levels = mx.array(rng.integers(0, 2**bits, size=(3, 10, 128)).astype(np.uint32))
    packed = pack(levels, bits)
    assert packed.shape == (3, 10, 128 * bits // 32)
    back = mx.dequantize(packed, mx.ones((3, 10, 2)), mx.zeros((3, 10, 2)), 64, bits)
    assert np.array_equal(np.asarray(back), np.asarray(levels).astype(np.float32))


@pytest.mark.parametrize("shape, importance_shape", [((48, 256), (256,)), ((3, 40, 128), (3, 128))])
def test_the_clip_search_in_row_blocks_gives_the_same_tensors(monkeypatch, shape, importance_shape):
    from studio.core.calibration import quantizer

    mx.random.seed(7)
    w = (mx.random.normal(shape) * 0.02).astype(mx.bfloat16)
    importance = mx.exp(mx.random.normal(importance_shape))
    whole = calibrated_quantize(w, 64, 3, importance, mx.bfloat16)
    monkeypatch.setattr(quantizer, "BLOCK_VALUES", 5 * shape[-1] * (shape[0] if len(shape) == 3 else 1))
    blocks = calibrated_quantize(w, 64, 3, importance, mx.bfloat16)  # 5 rows a block: a ragged last block
    for a, b in zip(whole, blocks):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert np.array_equal(np.asarray(a.astype(mx.float32)), np.asarray(b.astype(mx.float32)))


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_calibrated_quantization_beats_round_to_nearest_on_the_output(bits):
    mx.random.seed(bits)
    w = (mx.random.normal((64, 256)) * 0.02).astype(mx.bfloat16)
    importance = mx.exp(mx.random.normal((256,)) * 1.5)  # channels of very different energy
    x = mx.random.normal((512, 256)) * mx.sqrt(importance)
    plain = mx.quantize(w, 64, bits)
    calibrated = calibrated_quantize(w, 64, bits, importance, mx.bfloat16)
    for a, b in zip(plain, calibrated):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
    ref = x @ w.astype(mx.float32).T

    def error(q):
        return mx.sum(mx.square(x @ mx.dequantize(*q, 64, bits).astype(mx.float32).T - ref)).item()

    assert error(calibrated) < 0.8 * error(plain)


def test_gptq_feeds_errors_forward_and_beats_the_diagonal_method():
    from studio.core.calibration.gptq import gptq_quantize

    mx.random.seed(7)
    w = (mx.random.normal((2, 32, 128)) * 0.02).astype(mx.bfloat16)  # two experts
    x = mx.random.normal((1024, 16)) @ mx.random.normal((16, 128)) + 0.3 * mx.random.normal((1024, 128))
    h = np.asarray((x.T @ x) / 1024)  # correlated channels, as real activations are
    hessian = np.stack([h, h])
    plain = mx.quantize(w, 64, 2)
    diagonal = calibrated_quantize(w, 64, 2, mx.array(np.diagonal(hessian, axis1=1, axis2=2).copy()), mx.bfloat16)
    gptq = gptq_quantize(w, 64, 2, hessian, mx.bfloat16)
    for a, b in zip(plain, gptq):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)

    def error(q):
        d = mx.dequantize(*q, 64, 2).astype(mx.float32) - w.astype(mx.float32)
        return sum(mx.sum(mx.square(x @ d[e].T)).item() for e in range(2))

    assert error(gptq) < 0.7 * error(diagonal) < 0.7 * error(plain)


def test_knapsack_is_optimal_and_within_budget_to_the_byte():
    rng = random.Random(3)
    for _ in range(60):
        cells = {i: [(b, rng.randint(1, 40) * 16 + b * 48, rng.random() / b) for b in (2, 3, 4, 8)]
                 for i in range(5)}
        low = sum(min(o[1] for o in v) for v in cells.values())
        high = sum(max(o[1] for o in v) for v in cells.values())
        budget = rng.randint(low, high)
        choice, total, cost = solve(cells, budget)
        best = min(sum(o[2] for o in combo) for combo in itertools.product(*cells.values())
                   if sum(o[1] for o in combo) <= budget)
        assert total <= budget
        assert total == sum(next(o[1] for o in cells[k] if o[0] == v) for k, v in choice.items())
        assert cost == pytest.approx(best, abs=1e-12)


def test_knapsack_refuses_a_budget_below_the_smallest():
    with pytest.raises(StudioError, match="below the smallest"):
        solve({"a": [(2, 100, 1.0)]}, 99)


@pytest.fixture(scope="module")
def calibrated(tiny_model, tmp_path_factory):
    from studio.core.calibration.calibrate import calibrate
    from studio.core.project import Project

    source = tiny_model("minimax_m3_vl")
    project = Project.open(source, "config-i")
    cache = tmp_path_factory.mktemp("calibration-cache")
    stats = calibrate(project, sensitivity=True, bits_options=(2, 8), cache_dir=cache, **TOKENS)
    return source, project, stats, cache


def test_the_pass_collects_statistics_per_unit_and_per_expert(calibrated):
    _, project, stats, _ = calibrated
    experts = [u for u in project.units if u.role == "expert_gate"]
    assert experts and all(stats.units[u.path].sum_sq.shape == (u.shape[0], u.shape[2]) for u in experts)
    for u in experts:  # top-2 routing: every token went to exactly two experts of each MoE layer
        assert int(stats.units[u.path].count.sum()) == 2 * 128
    attention = [u for u in project.units if u.role == "attn_q"]
    assert all(int(stats.units[u.path].count) == 128 for u in attention)
    assert all(stats.hessian(u.path) is None for u in attention)  # 128 tokens < 4 per input channel
    assert stats.thin_experts()[1] == sum(u.shape[0] for u in project.units
                                          if u.kind == "module" and len(u.shape) == 3)


def test_sensitivity_falls_with_bits_and_covers_the_grid(calibrated):
    _, project, stats, _ = calibrated
    assert ("lm_head", None) in stats.sensitivity and ("embedding", None) in stats.sensitivity
    for role in ("expert_gate", "expert_down", "attn_v"):
        cell = next(c for c in stats.sensitivity if c[0] == role)
        errors = stats.sensitivity[cell]
        assert errors[2] > errors[8] >= 0


def test_results_are_cached_and_reused(calibrated, monkeypatch):
    from studio.core.calibration import calibrate as module

    _, project, stats, cache = calibrated
    monkeypatch.setattr(module, "run_pass", lambda *a, **k: pytest.fail("the cached pass was run again"))
    again = module.calibrate(project, sensitivity=True, bits_options=(2, 8), cache_dir=cache, **TOKENS)
    assert again.sensitivity == stats.sensitivity
    assert np.array_equal(again.units[next(iter(stats.units))].sum_sq, stats.units[next(iter(stats.units))].sum_sq)


def test_cancel_stops_the_pass(calibrated, tmp_path):
    from studio.core.calibration.calibrate import CalibrationCancelled, calibrate
    from studio.core.cancel import CancelToken

    _, project, _, _ = calibrated
    token = CancelToken()
    seen = []

    def progress(p):
        seen.append(p)
        if p.step == 1:
            token.cancel()

    with pytest.raises(CalibrationCancelled):
        calibrate(project, sensitivity=False, cache_dir=tmp_path, progress=progress, cancel=token, **TOKENS)
    assert not list(tmp_path.iterdir())


def _logits(folder, tokens):
    from studio.core.evaluate.run import load_model

    model, _ = load_model(folder)
    return model(mx.array(tokens)).astype(mx.float32)


def _convert_both(project, stats, folder):
    from studio.core.calibration.convert_hook import CalibratedQuantizer
    from studio.core.convert import convert

    plain, calib = folder / "plain", folder / "calibrated"
    convert(project, plain, measure_errors=False)
    quantizer = CalibratedQuantizer(stats)
    convert(project, calib, quantizer=quantizer, measure_errors=False)
    assert quantizer.used
    return plain, calib


def test_calibrated_conversion_has_the_plain_layout(calibrated, tmp_path):
    from studio.core.model.inventory import read_header

    _, project, stats, _ = calibrated
    plain, calib = _convert_both(project, stats, tmp_path)
    shards = sorted(p.name for p in plain.glob("*.safetensors"))
    assert shards == sorted(p.name for p in calib.glob("*.safetensors"))
    for name in shards:
        a = [(e.name, e.dtype, e.shape, e.start, e.nbytes) for e in read_header(plain / name)]
        b = [(e.name, e.dtype, e.shape, e.start, e.nbytes) for e in read_header(calib / name)]
        assert a == b
    assert json.loads((plain / "config.json").read_text()) == json.loads((calib / "config.json").read_text())
    assert "## Calibration" in (calib / "README.md").read_text()


def test_a_calibrated_demo_model_has_less_output_error_on_its_calibration_tokens(tmp_path):
    """The bundled demo model (trained, 7.5M parameters) under Config-I, with 512 calibration
    tokens: enough for GPTQ on its 128-wide units."""
    from studio.core.bundled import demo_model_path
    from studio.core.calibration.calibrate import calibrate
    from studio.core.calibration.corpus import load_corpus
    from studio.core.project import Project

    source = demo_model_path()
    project = Project.open(source, "config-i")
    tokens = dict(sequences=8, length=64)
    stats = calibrate(project, sensitivity=False, cache_dir=tmp_path / "cache", **tokens)
    assert any(stats.hessian(u.path) is not None for u in project.units if u.role == "expert_gate")
    plain, calib = _convert_both(project, stats, tmp_path)
    tokens = load_corpus(source, **tokens).tokens  # the calibration tokens, through all three models
    ref = _logits(source, tokens)

    def error(folder):
        return mx.sum(mx.square(_logits(folder, tokens) - ref)).item()

    assert error(calib) < error(plain)


def test_output_space_fit_is_exact_to_the_byte(calibrated):
    from studio.core.budget.propose import propose
    from studio.core.project import Project

    source, project, stats, _ = calibrated
    target = project.estimate.total_bytes - 5000
    proposal = propose(project, target, stats.sensitivity, options=(2, 8))
    assert proposal.total_bytes <= target
    assert Project.open(source, proposal.policy).estimate.total_bytes == proposal.total_bytes
    assert proposal.error_after <= proposal.error_before or proposal.changes


def test_fit_with_sensitivity_then_calibrated_convert_from_the_command_line(tiny_model, tmp_path, monkeypatch, capsys):
    from studio.core.calibration import corpus
    from studio.core.project import Project
    from studio.main import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(corpus, "DEFAULT_SEQUENCES", 2)
    monkeypatch.setattr(corpus, "DEFAULT_LENGTH", 32)
    source = tiny_model("minimax_m3_vl")
    target = Project.open(source, "config-i").estimate.total_bytes - 4096
    policy = tmp_path / "p.json"
    assert main(["fit", str(source), "--target-gb", repr(target / 1e9), "--sensitivity", "--out", str(policy),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["measure"] == "output-space sensitivity" and report["bytes_after"] <= target
    assert report["error_unit"].startswith("nats") and report["error_after"] < 1  # predicted KL, summed
    assert Project.open(source, str(policy)).estimate.total_bytes == report["bytes_after"]
    out = tmp_path / "out"
    assert main(["convert", str(source), str(out), "--policy", str(policy), "--calibrate"]) == 0
    assert "## Calibration" in (out / "README.md").read_text()


def test_only_one_layer_is_in_memory_at_a_time(calibrated, tmp_path, monkeypatch):
    """When layer i+1 loads, nothing holds layer i's probes (its weights) any more."""
    import gc
    import weakref

    from studio.core.calibration.calibrate import calibrate
    from studio.core.calibration.layers import Skeleton

    _, project, _, _ = calibrated
    earlier = []
    load = Skeleton.load_layer

    def watched(self, index):
        gc.collect()
        assert all(ref() is None for ref in earlier), f"layer {index - 1}'s probes outlived it"
        probes = load(self, index)
        earlier.extend(weakref.ref(p) for p in probes.values())
        return probes

    monkeypatch.setattr(Skeleton, "load_layer", watched)
    calibrate(project, sensitivity=True, bits_options=(2,), cache_dir=tmp_path, sequences=2, length=32)
    assert earlier


@pytest.mark.parametrize("bits", [6, 8])
def test_calibrated_quantization_is_never_worse_than_round_to_nearest_per_group(bits):
    """Round-to-nearest is one of the candidates, so no group may end up worse than it (8-bit did, when
    the candidate's levels were read back from a bfloat16 dequantize)."""
    mx.random.seed(bits)
    w = (mx.random.normal((128, 256)) * 0.02).astype(mx.bfloat16)
    importance = mx.exp(mx.random.normal((256,)) * 1.5)
    plain = mx.quantize(w, 64, bits)
    calibrated = calibrated_quantize(w, 64, bits, importance, mx.bfloat16)

    def group_errors(q):
        exact = mx.dequantize(q[0], q[1].astype(mx.float32), q[2].astype(mx.float32), 64, bits)  # s * l + b
        d = exact - w.astype(mx.float32)
        return np.asarray(mx.sum((importance * mx.square(d)).reshape(128, 4, 64), axis=-1), dtype=np.float64)

    assert np.all(group_errors(calibrated) <= group_errors(plain) * (1 + 1e-5))
