"""GPTQ for routed experts: each expert's own Hessian where it saw enough tokens, its projection's
pooled one rescaled to the expert where it did not, the clipping search where neither exists."""

import mlx.core as mx
import numpy as np
import pytest

from studio.core.calibration.expert_hessians import CLIP, OWN, POOLED, ExpertHessians, correlation
from studio.core.calibration.gptq import quantize_experts
from studio.core.calibration.quantizer import calibrated_quantize

TOKENS = dict(sequences=16, length=64)  # 1,024 tokens: about 256 rows an expert, 512 wanted for its own


def _dequantized(q, bits=2):
    return np.asarray(mx.dequantize(*q, 64, bits).astype(mx.float32), dtype=np.float64)


def test_the_pooled_fallback_beats_clipping_on_held_out_inputs_of_a_thin_expert():
    """Experts whose inputs share one correlation structure at their own channel scales, each with
    far fewer rows than its own Hessian would need: the pooled correlation at the expert's scales
    lowers the output error on rows none of them saw."""
    rng = np.random.default_rng(0)
    experts, out, inputs = 3, 32, 128
    mix = rng.standard_normal((24, inputs))
    scales = np.exp(0.8 * rng.standard_normal((experts, inputs)))

    def rows(e, n):
        return (rng.standard_normal((n, 24)) @ mix + 0.3 * rng.standard_normal((n, inputs))) * scales[e]

    seen = [rows(e, 96) for e in range(experts)]  # 96 rows each, against 512 wanted
    pooled = sum(x.T @ x for x in seen)
    counts = np.array([96] * experts)
    sum_sq = np.stack([np.sum(x * x, axis=0) for x in seen])
    hessians = ExpertHessians(np.full(experts, POOLED, dtype=np.int8), counts, sum_sq / counts[:, None], None,
                              correlation(pooled))
    w = (mx.random.normal((experts, out, inputs), key=mx.random.key(1)) * 0.02).astype(mx.bfloat16)
    gptq = quantize_experts(w, 64, 2, hessians, mx.bfloat16)
    clip = calibrated_quantize(w, 64, 2, mx.array(hessians.scales, dtype=mx.float32), mx.bfloat16)
    plain = mx.quantize(w, 64, 2)
    for a, b in zip(plain, gptq):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
    w64 = np.asarray(w.astype(mx.float32), dtype=np.float64)

    def error(q):
        dw = _dequantized(q) - w64
        return sum(np.sum((rows(e, 2000) @ dw[e].T) ** 2) for e in range(experts))

    assert error(gptq) < 0.8 * error(clip)


@pytest.fixture(scope="module")
def mixtral_stats(tiny_model, tmp_path_factory):
    from studio.core.calibration.calibrate import calibrate
    from studio.core.project import Project

    source = tiny_model("mixtral")
    project = Project.open(source, "config-i")
    stats = calibrate(project, sensitivity=False, cache_dir=tmp_path_factory.mktemp("cache"), **TOKENS)
    return source, project, stats


def _experts(project, role):
    return [u for u in project.units if u.role == role and u.kind == "module"]


def test_a_real_experts_output_error_falls_with_its_own_hessian(mixtral_stats):
    """A factory Mixtral's expert that saw enough tokens: GPTQ with its own X^T X has less error on
    the rows it saw (||X dW^T||^2 = tr(dW X^T X dW^T)) than the clipping search."""
    from studio.core.model.unit_source import read_unit_rows, unit_values

    source, project, stats = mixtral_stats
    unit = _experts(project, "expert_gate")[0]
    hessians = stats.hessian(unit.path)
    own = [e for e in range(len(hessians)) if hessians.methods[e] == OWN]
    assert own, hessians.counts  # the router sends some expert at least 4 tokens per input channel
    e = own[0]
    reader = project.inventory.source.reader()
    try:
        w = unit_values(unit, read_unit_rows(reader, project.inventory, unit, e, e + 1))
    finally:
        reader.close()
    gptq = quantize_experts(w, 64, 2, hessians[e:e + 1], mx.bfloat16)
    clip = calibrated_quantize(w, 64, 2, mx.array(hessians.scales[e:e + 1], dtype=mx.float32), mx.bfloat16)
    h = hessians.own[e].astype(np.float64)
    w64 = np.asarray(w.astype(mx.float32), dtype=np.float64)

    def error(q):
        dw = (_dequantized(q) - w64)[0]
        return np.einsum("oi,ij,oj->", dw, h, dw)

    assert error(gptq) < 0.9 * error(clip)


def test_thin_experts_fall_back_to_the_pooled_hessian_and_are_counted(mixtral_stats):
    _, project, stats = mixtral_stats
    methods = {u.path: stats.expert_methods(u.path) for u in _experts(project, "expert_down")}
    # down's input is 256 wide: 1,024 rows wanted, about 256 an expert seen; pooled: 2,048 rows
    assert all(np.all(m == POOLED) for m in methods.values()), methods
    gate = stats.expert_methods(_experts(project, "expert_gate")[0].path)
    assert set(gate.tolist()) <= {OWN, POOLED} and CLIP not in gate


def test_wide_experts_convert_with_the_pooled_factor_to_stock_mlx_at_the_estimated_bytes(
        mixtral_stats, tmp_path, monkeypatch, capsys):
    """No expert's own X^T X kept (as on MiniMax-M3, where 128 of them would take 19 GB): every
    expert goes through the pooled factor; the output is what the estimate said, byte for byte, and
    mlx-lm loads and runs it; the command line and the card say which expert got what."""
    from studio.core.calibration import corpus, probes
    from studio.core.evaluate.run import load_model
    from studio.core.project import Project
    from studio.main import main

    source, _, _ = mixtral_stats
    monkeypatch.setattr(probes, "EXPERT_HESSIANS_BYTES", 0)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(corpus, "DEFAULT_SEQUENCES", TOKENS["sequences"])
    monkeypatch.setattr(corpus, "DEFAULT_LENGTH", TOKENS["length"])
    out = tmp_path / "out"
    assert main(["convert", str(source), str(out), "--calibrate"]) == 0
    err = capsys.readouterr().err
    assert "calibration: layer 0 experts: 0 GPTQ own Hessian, 24 pooled/shrunk fallback, 0 clip-only" in err
    assert "- layer 1 experts: 0 GPTQ own Hessian, 24 pooled/shrunk fallback" in (out / "README.md").read_text()
    written = sum(p.stat().st_size - 8 - int.from_bytes(p.read_bytes()[:8], "little")
                  for p in out.glob("*.safetensors"))
    assert written == Project.open(source, "config-i").estimate.total_bytes
    model, _ = load_model(out)
    logits = model(mx.array([[1, 2, 3, 4]]))
    assert np.isfinite(np.asarray(logits.astype(mx.float32))).all()
