"""llama.cpp's KL-divergence statistics, NaN/inf in logits, the verdict's weighing and the CPU compute path."""

from __future__ import annotations

import json
import math
import re

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx_lm.models import llama

from studio.core.evaluate.stats import summarize
from studio.core.evaluate.verdict import make_verdict, relative_change
from studio.core.evaluate.run import evaluate

# --- every statistic against a float64 hand computation ---------------------------------------------


def _llama_cpp_by_hand(nll_ref, nll_out, kl, same):
    """The figures as tools/perplexity/perplexity.cpp computes them: running sums, then its formulas."""
    n = len(kl)

    def mean_unc(values):
        s = sum(values)
        s2 = sum(v * v for v in values)
        f = s / n
        var = s2 / n - f * f
        return f, (math.sqrt(var / (n - 1)) if var > 0 and n > 10 else 0.0)

    def percentile(sorted_values, fraction):
        p = fraction * (len(sorted_values) - 1)
        i = int(p)
        p -= i
        return (1 - p) * sorted_values[i] + p * sorted_values[min(i + 1, len(sorted_values) - 1)]

    log_ppl, log_ppl_unc = mean_unc(nll_out)
    log_base, log_base_unc = mean_unc(nll_ref)
    cov = (sum(a * b for a, b in zip(nll_out, nll_ref)) / n - log_ppl * log_base) / (n - 1)
    kld, kld_unc = mean_unc(kl)
    ordered = sorted(kl)
    median = 0.5 * (ordered[n // 2] + ordered[n // 2 - 1]) if n % 2 == 0 else ordered[n // 2]
    dp = [math.exp(-o) - math.exp(-r) for o, r in zip(nll_out, nll_ref)]
    mse, mse_unc = mean_unc([d * d for d in dp])
    dp_mean, dp_mean_unc = mean_unc(dp)
    top = sum(same) / n
    return {
        "ppl": math.exp(log_ppl), "ppl_stderr": math.exp(log_ppl) * log_ppl_unc,
        "ppl_reference": math.exp(log_base), "ppl_reference_stderr": math.exp(log_base) * log_base_unc,
        "ln_ppl_ratio": log_ppl - log_base,
        "ln_ppl_ratio_stderr": math.sqrt(log_ppl_unc ** 2 + log_base_unc ** 2 - 2 * cov),
        "kld_mean": kld, "kld_stderr": kld_unc, "kld_median": median,
        "kld_p90": percentile(ordered, 0.90), "kld_p95": percentile(ordered, 0.95),
        "kld_p99": percentile(ordered, 0.99), "kld_p999": percentile(ordered, 0.999), "kld_max": ordered[-1],
        "top1_agreement": top, "top1_agreement_stderr": math.sqrt(top * (1 - top) / (n - 1)),
        "dp_mean": dp_mean, "dp_mean_stderr": dp_mean_unc,
        "dp_rms": math.sqrt(mse), "dp_rms_stderr": 0.5 / math.sqrt(mse) * mse_unc,
    }


def _tiny_case(n=40, seed=0):
    rng = np.random.default_rng(seed)
    nll_ref = rng.gamma(2.0, 1.5, n)
    nll_out = nll_ref + rng.normal(0.05, 0.2, n).clip(-0.5, None)
    kl = rng.exponential(0.03, n)
    same = rng.random(n) < 0.85
    return nll_ref, nll_out, kl, same


@pytest.mark.parametrize("n", [40, 41, 1001])
def test_every_statistic_matches_llama_cpp_by_hand(n):
    nll_ref, nll_out, kl, same = _tiny_case(n)
    got = summarize(nll_ref, nll_out, kl, same, np.full(n, -0.5))
    want = _llama_cpp_by_hand(list(nll_ref), list(nll_out), list(kl), list(same))
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-15), key
    assert got["tokens"] == got["positions"] == n and got["nonfinite_output"] == 0
    assert got["reference_confidence"] == pytest.approx(math.exp(-0.5))


def test_few_positions_have_no_standard_error():
    nll_ref, nll_out, kl, same = _tiny_case(10)
    got = summarize(nll_ref, nll_out, kl, same, np.zeros(10))
    assert got["kld_stderr"] == got["ppl_stderr"] == 0.0 and got["kld_mean"] > 0


def test_flagged_and_nonfinite_positions_are_left_out():
    nll_ref, nll_out, kl, same = _tiny_case(60)
    bad_out = np.zeros(60, bool)
    bad_out[[3, 17]] = True
    bad_ref = np.zeros(60, bool)
    bad_ref[40] = True
    nll_out[50] = np.nan
    kl[3] = np.inf
    got = summarize(nll_ref, nll_out, kl, same, np.zeros(60), None, bad_ref, bad_out)
    keep = np.ones(60, bool)
    keep[[3, 17, 40, 50]] = False
    clean = summarize(nll_ref[keep], nll_out[keep], kl[keep], same[keep], np.zeros(56))
    assert (got["positions"], got["tokens"], got["nonfinite_output"], got["nonfinite_reference"]) == (60, 56, 2, 1)
    for key in ("ppl", "kld_mean", "kld_max", "dp_rms", "top1_agreement", "ln_ppl_ratio_stderr"):
        assert got[key] == clean[key] and math.isfinite(got[key]), key


# --- NaN and inf from a model ------------------------------------------------------------------------

VOCAB = 128


class Poisoned(nn.Module):
    """A model whose logits hold ``value`` at some positions of every window (as an overflowing expert would)."""

    def __init__(self, inner, rows, value):
        super().__init__()
        self.inner = inner
        self.rows = list(rows)
        self.value = value

    def __call__(self, x, cache=None):
        logits = self.inner(x)
        hit = np.zeros((1, x.shape[1], 1), bool)
        hit[0, [r for r in self.rows if r < x.shape[1]]] = True
        column = np.zeros((1, 1, logits.shape[-1]), bool)
        column[..., 5] = True  # one logit of the row is enough to poison it
        return mx.where(mx.array(hit & column), self.value, logits)


def _model(seed=0):
    mx.random.seed(seed)
    m = llama.Model(llama.ModelArgs(model_type="llama", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                                    num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                                    vocab_size=VOCAB, tie_word_embeddings=False))
    mx.eval(m.parameters())
    return m


@pytest.mark.parametrize("mode", ["together", "cached"])
def test_nan_and_inf_in_logits_are_counted_and_the_rest_stays_finite(mode, tmp_path):
    reference, output = _model(0), _model(1)
    tokens = np.random.default_rng(0).integers(0, VOCAB, 4 * 32)
    clean = evaluate((output, None), (reference, None), tokens=tokens, context=32, mode=mode,
                     cache_dir=tmp_path / "clean")
    bad_out = Poisoned(output, [2, 9], float("nan"))
    bad_ref = Poisoned(reference, [20], float("inf"))
    r = evaluate((bad_out, None), (bad_ref, None), tokens=tokens, context=32, mode=mode, cache_dir=tmp_path / "bad")
    assert (r.nonfinite_output, r.nonfinite_reference) == (8, 4)
    assert r.positions == clean.positions == 4 * 31 and r.tokens == r.positions - 12
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))  # strict JSON: no NaN anywhere
    for key in ("ppl", "ppl_reference", "kld_mean", "kld_p999", "kld_max", "dp_rms", "top1_agreement"):
        assert math.isfinite(d[key]), key
    assert r.kld_mean != clean.kld_mean  # the other positions are still compared
    assert all(w["tokens"] == 28 for w in d["per_window"])
    verdict = r.verdict()
    assert "NaN/inf outputs" in [f.name for f in verdict.findings] and verdict.label == "badly damaged"
    assert "NaN/inf outputs" in verdict.drivers
    assert any("reference's own logits" in c for c in verdict.caveats)


def test_all_positions_nonfinite_gives_no_figures_and_no_nan(tmp_path):
    reference = _model(0)
    broken = Poisoned(_model(1), range(64), float("nan"))
    r = evaluate((broken, None), (reference, None), tokens=np.arange(64) % VOCAB, context=32)
    assert r.tokens == 0 and r.nonfinite_output == 62 and r.ppl is None and r.kld_mean is None
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["ppl"] is None and d["verdict"]["label"] == "badly damaged"
    from studio.commands.evaluate import format_report

    shown = format_report(r)
    assert "62 of 62 positions left out" in shown and not re.search(r"\bnan\b(?! or inf|/inf)", shown.lower())


def test_second_half_scoring_is_llama_cpps(tmp_path):
    """--score second-half keeps predictions first = n_ctx/2 .. n_ctx-2 of each window, as perplexity.cpp does."""
    reference, output = _model(0), _model(1)
    tokens = np.random.default_rng(1).integers(0, VOCAB, 3 * 32)
    kl, nll = [], []
    for a in range(0, 96, 32):
        w = tokens[a:a + 32]
        lr, lo = (np.array(nn.log_softmax(m(mx.array(w[None, :-1].astype(np.int32)))[0], axis=-1), dtype=np.float64)
                  for m in (reference, output))
        kl += list((np.exp(lr) * (lr - lo)).sum(-1)[16:])
        nll += list(-lo[np.arange(31), w[1:]][16:])
    for mode in ("together", "cached"):
        r = evaluate((output, None), (reference, None), tokens=tokens, context=32, score="second-half", mode=mode,
                     cache_dir=tmp_path)
        assert r.positions == r.tokens == 3 * 15 and r.scored == "second-half"
        assert r.kld_mean == pytest.approx(np.mean(kl), rel=1e-4) and r.ppl == pytest.approx(math.exp(np.mean(nll)),
                                                                                            rel=1e-5)
        assert all(w.tokens == 15 for w in r.per_window)
    assert r.to_dict()["scored"] == "second-half"


# --- the verdict weighs its figures ------------------------------------------------------------------


def _result(**kw):
    from studio.core.evaluate.result import EvalResult

    base = dict(ppl=10.0, ppl_reference=10.0, kld_mean=0.0, kld_median=0.0, kld_p99=0.0, kld_max=0.0,
                top1_agreement=1.0, tokens=4000, windows=8, context=512, kld_exact=True, kld_tail_mass=None,
                reference_confidence=0.6, mode="together", cache="none", output="o", reference="r", text="t",
                seconds=1.0)
    base.update(kw)
    return EvalResult(**base)


def test_config_i_on_the_demo_is_not_called_damaged_by_top1_alone():
    """Issue 11 item 11: ppl +0.4%, KL near-lossless, top-1 87.9% once read "Noticeably damaged"."""
    v = make_verdict(_result(ppl=66.26, ppl_reference=66.0, kld_mean=0.027, top1_agreement=0.879))
    assert v.label == "good" and v.drivers == ["top-1 agreement"]
    assert "top-1 agreement reads noticeably damaged and pulled it down to good" in v.summary
    assert "perplexity near-lossless" in v.summary and "KL divergence near-lossless" in v.summary


def test_the_headline_and_the_figure_that_drove_it_agree():
    """Issue 18: "Near-lossless" above "top-1 agreement reads good and drove it". A figure that
    reads better or worse than the headline is named as deciding it only with the reason why."""
    v = make_verdict(_result(ppl=66.2, ppl_reference=66.0, kld_mean=0.02, top1_agreement=0.93))
    assert v.label == "near-lossless" and v.drivers == ["perplexity", "KL divergence"]
    assert "perplexity and KL divergence read near-lossless and set it" in v.summary
    assert "top-1 agreement good" in v.summary


@pytest.mark.parametrize("ppl", [66.2, 68.0, 72.0, 90.0])
@pytest.mark.parametrize("kld", [0.02, 0.1, 0.3, 0.9])
@pytest.mark.parametrize("top1", [0.97, 0.92, 0.85, 0.5])
@pytest.mark.parametrize("confident", [True, False])
def test_every_verdict_says_why_its_drivers_decided_it(ppl, kld, top1, confident):
    v = make_verdict(_result(ppl=ppl, ppl_reference=66.0, kld_mean=kld, top1_agreement=top1,
                             reference_confidence=0.6 if confident else 0.1))
    assert f"looks {v.label} next to" in v.summary
    counted = {f.name: f for f in v.findings if f.counted}
    assert v.drivers and set(v.drivers) <= set(counted)
    for name in v.drivers:
        level = counted[name].level
        if level == v.level:
            assert "and set it" in v.summary or "agree" in v.summary
        else:  # a driver never reads better than the headline, and a worse one comes with the reason
            assert level > v.level
            assert (f"pulled it down to {v.label}" in v.summary
                    or (level == 3 and "which alone keeps the verdict at noticeably damaged" in v.summary))


def test_huge_perplexity_increases_read_as_a_factor():
    assert relative_change(274842.4597) == "x275,000"  # once printed "+27484245.97%"
    assert relative_change(11.3) == "x12.3"
    assert relative_change(0.0042) == "+0.42%" and relative_change(-0.013) == "-1.30%"
    v = make_verdict(_result(ppl=2.75e6, kld_mean=9.0, top1_agreement=0.01))
    assert "x275,000" in v.findings[0].value and "%" not in v.findings[0].value.split("(")[1]


# --- the CPU compute path ------------------------------------------------------------------------------

TEXT = ("The studio converts a model, then checks it against the model it came from. "
        "A good quant keeps the next-token distribution close to the reference's. ") * 12


@pytest.fixture(scope="module")
def bf16_quant(tmp_path_factory):
    """A tiny bf16 llama and mlx-lm's 4-bit quant of it (bfloat16 scales, as real MLX quants have)."""
    from factory import make_tiny_model
    from mlx_lm import convert

    root = tmp_path_factory.mktemp("cpu_path")
    ref = make_tiny_model("llama", root / "ref")
    convert(str(ref), str(root / "q4"), quantize=True, q_bits=4, q_group_size=32)
    return ref, root / "q4"


def _float64_figures(ref, out) -> dict:
    """Both models with every weight dequantized to its stored value and run in float64 by MLX."""
    from mlx_lm import load

    from studio.core.runtime.compute_path import dequantize_model
    from studio.core.evaluate.inputs import encode, make_windows

    models = []
    for path in (ref, out):
        model, tokenizer = load(str(path))
        dequantize_model(model)
        model.set_dtype(mx.float64)
        models.append(model)
    ids = encode(tokenizer, TEXT, 256)
    nll_ref, nll_out, kl, same = [], [], [], []
    for a, b in make_windows(len(ids), 64):
        w, t = ids[a:b], ids[a + 1:b]
        lr, lo = (np.array(nn.log_softmax(m(mx.array(w[None, :-1].astype(np.int32)))[0], axis=-1), dtype=np.float64)
                  for m in models)
        nll_ref += list(-lr[np.arange(len(t)), t])
        nll_out += list(-lo[np.arange(len(t)), t])
        kl += list((np.exp(lr) * (lr - lo)).sum(-1))
        same += list(lr.argmax(-1) == lo.argmax(-1))
    return {"ppl": math.exp(np.mean(nll_out)), "ppl_reference": math.exp(np.mean(nll_ref)),
            "kld_mean": float(np.mean(kl)), "top1_agreement": float(np.mean(same))}


def test_cpu_path_equals_float64_and_the_bf16_kernels_do_not(bf16_quant):
    """Measured on this tiny 4-bit llama: the dequantized float32 path is within 3e-8 (perplexity) and 2e-5
    (mean KL) of float64; the bfloat16 quantized kernels are off by 3.4e-4 in perplexity, 3.8% in mean KL
    and 1.2 points of top-1."""
    from studio.core.runtime.compute_path import on_cpu_backend

    ref, out = bf16_quant
    with mx.stream(mx.cpu):  # float64 runs on the CPU only (Metal has none)
        exact = _float64_figures(ref, out)
    cpu = evaluate(out, ref, text=TEXT, context=64, max_tokens=256, compute="dequantized")
    kernels = evaluate(out, ref, text=TEXT, context=64, max_tokens=256, compute="quantized")
    assert (cpu.compute_path, kernels.compute_path) == ("dequantized_float32", "quantized_kernels")
    assert cpu.compute_device == ("cpu" if on_cpu_backend() else "gpu")
    assert cpu.ppl == pytest.approx(exact["ppl"], rel=1e-6)
    assert cpu.ppl_reference == pytest.approx(exact["ppl_reference"], rel=1e-6)
    assert cpu.kld_mean == pytest.approx(exact["kld_mean"], rel=2e-4)
    assert cpu.top1_agreement == exact["top1_agreement"]
    kl_error = abs(kernels.kld_mean / exact["kld_mean"] - 1)
    if on_cpu_backend():  # the bf16 CPU kernels' error, measured: 3.8% in mean KL
        assert 0.01 < kl_error < 0.2
        assert abs(kernels.ppl / exact["ppl"] - 1) > 1e-4
    else:  # on Metal the quantized kernels are kept, and must agree with the exact figures
        assert kl_error < 0.01 and kernels.ppl == pytest.approx(exact["ppl"], rel=1e-4)
    d = cpu.to_dict()
    assert (d["compute_device"], d["compute_path"]) == (cpu.compute_device, "dequantized_float32")


def test_chat_names_the_real_mix_of_a_mixed_output(tiny_model, tmp_path):
    """Issue 11 item 9: a mixed output was labelled by the config's top-level bits."""
    from studio.core.convert import convert
    from studio.core.runtime.generation import load_model
    from studio.core.project import Project

    project = Project.open(tiny_model("llama"), "mixed-3-6")
    out = tmp_path / "mixed"
    convert(project, out)
    loaded = load_model(out, compute="quantized")
    expected = f"{project.estimate.bpw_quantized:.2f} bpw"
    assert loaded.quantization == f"{project.policy.name}: 3/6-bit, {expected}"
    assert "Mixed 3/6" in loaded.describe() and "6-bit)" not in loaded.describe()
    assert load_model(tiny_model("llama")).quantization == "unquantized"
