"""Validate a quant: perplexity, KL divergence, top-1 agreement, the reference cache and `eval`."""

from __future__ import annotations

import json
import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map
from mlx_lm.models import llama
from mlx_lm.models.cache import make_prompt_cache

from studio.core.evaluate import logits_cache as lc
from studio.core.cancel import CancelToken
from studio.core.errors import StudioError
from studio.core.evaluate.inputs import make_windows
from studio.core.evaluate.result import EvalResult
from studio.core.evaluate.verdict import make_verdict
from studio.core.evaluate.run import EvalCancelled, evaluate

VOCAB = 128
CONTEXT = 64


def _tiny(seed: int = 0) -> nn.Module:
    mx.random.seed(seed)
    args = llama.ModelArgs(model_type="llama", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                           num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=VOCAB,
                           tie_word_embeddings=False)
    model = llama.Model(args)
    # Larger output weights so the next-token distributions are peaked, as a trained model's are.
    model.lm_head.weight = model.lm_head.weight * 8
    mx.eval(model.parameters())
    return model


@pytest.fixture(scope="module")
def reference() -> nn.Module:
    return _tiny(0)


@pytest.fixture(scope="module")
def tokens(reference) -> np.ndarray:
    """Text the reference itself wrote (sampled at temperature 1), so it is the 'true' model of it:
    any damaged copy must then have a higher perplexity on it, up to sampling noise."""
    mx.random.seed(1)
    cache = make_prompt_cache(reference)
    out = [1]
    x = mx.array([[1]])
    for _ in range(5 * CONTEXT - 1):
        logits = reference(x, cache=cache)[:, -1]
        x = mx.random.categorical(logits)[:, None]
        out.append(int(x.item()))
    return np.array(out)


@pytest.fixture(scope="module")
def damaged(reference) -> nn.Module:
    """The reference quantized to 2 bits with MLX (attention and MLP; embeddings too)."""
    model = _tiny(0)
    model.update(tree_map(lambda x: x, reference.parameters()))
    nn.quantize(model, group_size=32, bits=2)
    mx.eval(model.parameters())
    return model


def _by_hand(ref_model, out_model, ids: np.ndarray, context: int) -> dict:
    """Every figure recomputed in numpy float64 from the models' raw logits."""
    nll_ref, nll_out, kl, agree = [], [], [], []
    for a, b in make_windows(len(ids), context):
        w = ids[a:b]

        def logp(m):
            z = np.array(m(mx.array(w[None, :-1].astype(np.int32)))[0].astype(mx.float32), dtype=np.float64)
            z = z - z.max(axis=-1, keepdims=True)
            return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

        lr, lo = logp(ref_model), logp(out_model)
        t = w[1:]
        nll_ref += list(-lr[np.arange(len(t)), t])
        nll_out += list(-lo[np.arange(len(t)), t])
        kl += list((np.exp(lr) * (lr - lo)).sum(axis=-1))
        agree += list(lr.argmax(-1) == lo.argmax(-1))
    return {"ppl_reference": math.exp(np.mean(nll_ref)), "ppl": math.exp(np.mean(nll_out)),
            "kld_mean": float(np.mean(kl)), "top1_agreement": float(np.mean(agree)), "tokens": len(kl)}


# --- the figures --------------------------------------------------------------------------------


def test_model_against_itself(reference, tokens):
    r = evaluate((reference, None), (reference, None), tokens=tokens, context=CONTEXT)
    assert r.mode == "together"
    assert r.kld_mean == 0.0 and r.kld_max == 0.0
    assert r.top1_agreement == 1.0
    assert r.ppl == r.ppl_reference
    assert r.tokens == len(tokens) - r.windows and r.windows == 5
    assert r.verdict().label == "near-lossless"


def test_perplexity_kl_and_top1_match_a_hand_computation(reference, damaged, tokens):
    r = evaluate((damaged, None), (reference, None), tokens=tokens, context=CONTEXT)
    hand = _by_hand(reference, damaged, tokens, CONTEXT)
    assert r.tokens == hand["tokens"]
    assert r.ppl_reference == pytest.approx(hand["ppl_reference"], rel=1e-5)
    assert r.ppl == pytest.approx(hand["ppl"], rel=1e-5)
    assert r.kld_mean == pytest.approx(hand["kld_mean"], rel=1e-4)
    assert r.top1_agreement == pytest.approx(hand["top1_agreement"], abs=1e-12)
    # per-window figures recombine into the totals
    assert sum(w.tokens for w in r.per_window) == r.tokens
    assert sum(w.kld_mean * w.tokens for w in r.per_window) / r.tokens == pytest.approx(r.kld_mean, rel=1e-6)


def test_perplexity_on_a_tiny_case_by_hand():
    """Two windows of 4 tokens; log-softmax written out in numpy."""
    model = _tiny(3)
    ids = np.array([5, 9, 2, 77, 31, 8, 8, 120])
    r = evaluate((model, None), (model, None), tokens=ids, context=4)
    assert r.windows == 2 and r.tokens == 6
    nll = []
    for w in (ids[:4], ids[4:]):
        z = np.array(model(mx.array(w[None, :-1]))[0], dtype=np.float64)
        for pos, target in enumerate(w[1:]):
            nll.append(np.log(np.exp(z[pos]).sum()) - z[pos, target])
    assert r.ppl_reference == pytest.approx(math.exp(np.mean(nll)), rel=1e-5)


def test_a_damaged_model_scores_worse(reference, damaged, tokens):
    noisy = _tiny(0)
    mx.random.seed(7)
    noisy.update(tree_map(lambda x: x + 0.02 * mx.random.normal(x.shape), reference.parameters()))
    for out in (damaged, noisy):
        r = evaluate((out, None), (reference, None), tokens=tokens, context=CONTEXT)
        assert r.kld_mean > 0.01
        assert r.ppl > r.ppl_reference * 1.01
        assert r.top1_agreement < 1.0
        assert r.verdict().level > 0
    # 2-bit is much worse than light noise
    r2 = evaluate((damaged, None), (reference, None), tokens=tokens, context=CONTEXT)
    rn = evaluate((noisy, None), (reference, None), tokens=tokens, context=CONTEXT)
    assert r2.kld_mean > rn.kld_mean


def test_more_bits_drift_less(reference, tokens):
    kld = {}
    for bits in (2, 4, 8):
        model = _tiny(0)
        model.update(tree_map(lambda x: x, reference.parameters()))
        nn.quantize(model, group_size=32, bits=bits)
        kld[bits] = evaluate((model, None), (reference, None), tokens=tokens, context=CONTEXT).kld_mean
    assert kld[2] > kld[4] > kld[8] > 0


# --- the reference cache --------------------------------------------------------------------------


def test_cached_reference_gives_the_same_numbers(reference, damaged, tokens, tmp_path):
    together = evaluate((damaged, None), (reference, None), tokens=tokens, context=CONTEXT, mode="together")
    stages = []
    first = evaluate((damaged, None), (reference, None), tokens=tokens, context=CONTEXT, mode="cached",
                     cache_dir=tmp_path, progress=lambda p: stages.append(p.stage))
    assert first.cache == "written" and first.kld_exact
    assert set(stages) == {"reference", "output"}
    folders = list(tmp_path.glob("ref-*"))
    assert len(folders) == 1 and (folders[0] / "logprobs.npy").is_file()
    assert json.loads((folders[0] / "meta.json").read_text())["storage"] == "full"

    stages.clear()
    again = evaluate((damaged, None), (reference, None), tokens=tokens, context=CONTEXT, mode="cached",
                     cache_dir=tmp_path, progress=lambda p: stages.append(p.stage))
    assert again.cache == "reused" and set(stages) == {"output"}
    for r in (first, again):
        for key in ("ppl", "ppl_reference", "kld_mean", "kld_max", "top1_agreement", "tokens", "windows",
                    "reference_confidence"):
            assert getattr(r, key) == pytest.approx(getattr(together, key), rel=1e-6, abs=1e-9), key

    # Other tokens are another cache entry, not a stale hit.
    other = evaluate((damaged, None), (reference, None), tokens=tokens[:-CONTEXT], context=CONTEXT,
                     mode="cached", cache_dir=tmp_path)
    assert other.cache == "written" and len(list(tmp_path.glob("ref-*"))) == 2


def test_top_k_cache_is_a_close_lower_bound(reference, damaged, tokens, tmp_path):
    exact = evaluate((damaged, None), (reference, None), tokens=tokens, context=CONTEXT, mode="together")
    approx = {}
    for k in (8, 64):
        r = evaluate((damaged, None), (reference, None), tokens=tokens, context=CONTEXT, mode="cached",
                     cache_dir=tmp_path / str(k), top_k=k, full_budget_bytes=0)
        assert not r.kld_exact and 0 <= r.kld_tail_mass < 1
        meta = json.loads(next((tmp_path / str(k)).glob("ref-*/meta.json")).read_text())
        assert meta["storage"] == "topk" and meta["k"] == k
        # perplexity and top-1 need no approximation
        assert r.ppl == pytest.approx(exact.ppl, rel=1e-6)
        assert r.ppl_reference == pytest.approx(exact.ppl_reference, rel=1e-6)
        assert r.top1_agreement == exact.top1_agreement
        assert r.reference_confidence == pytest.approx(exact.reference_confidence, rel=1e-6)
        assert r.kld_mean <= exact.kld_mean * (1 + 1e-5)
        assert "underestimate" in " ".join(r.verdict().caveats)
        approx[k] = r
    assert approx[64].kld_tail_mass < approx[8].kld_tail_mass
    assert approx[8].kld_mean <= approx[64].kld_mean * (1 + 1e-5)
    assert approx[64].kld_mean == pytest.approx(exact.kld_mean, rel=0.05)


def test_kl_topk_is_exact_when_the_tail_is_proportional():
    # q's tail is p's tail scaled: merging the tail into one bucket then loses nothing.
    p = np.array([0.5, 0.2, 0.1, 0.1, 0.05, 0.05])
    q = np.array([0.3, 0.3, 0.2, 0.1, 0.05, 0.05])
    q[2:] = p[2:] * (q[2:].sum() / p[2:].sum())
    lp, lq = mx.array(np.log(p)[None].astype(np.float32)), mx.array(np.log(q)[None].astype(np.float32))
    exact = float(lc.kl_full(lp, lq)[0])
    idx, top = lc.top_k_of(lp, 2)
    approx, tail = lc.kl_topk(idx, top, lq)
    assert float(tail[0]) == pytest.approx(0.3, rel=1e-5)
    assert float(approx[0]) == pytest.approx(exact, rel=1e-4)
    assert exact == pytest.approx(float((p * np.log(p / q)).sum()), rel=1e-4)


def test_cancel_leaves_no_cache(reference, damaged, tokens, tmp_path):
    stop = CancelToken()

    def progress(p):
        if p.done == 2:
            stop.cancel()

    with pytest.raises(EvalCancelled):
        evaluate((damaged, None), (reference, None), tokens=tokens, context=CONTEXT, mode="cached",
                 cache_dir=tmp_path, progress=progress, cancel=stop)
    assert list(tmp_path.iterdir()) == []
    cancelled = CancelToken()
    cancelled.cancel()
    with pytest.raises(EvalCancelled):
        evaluate((damaged, None), (reference, None), tokens=tokens, context=CONTEXT, cancel=cancelled)


# --- windows, verdict, errors --------------------------------------------------------------------------


def test_windows():
    assert make_windows(10, 4) == [(0, 4), (4, 8), (8, 10)]  # tail of 2 >= half a context
    assert make_windows(9, 4) == [(0, 4), (4, 8)]  # tail of 1 predicts nothing
    assert make_windows(13, 8) == [(0, 8), (8, 13)]  # tail of 5 >= 4 kept
    assert make_windows(11, 8) == [(0, 8)]  # tail of 3 < 4 dropped: too little context
    assert make_windows(3, 8) == [(0, 3)]  # a single short window is kept
    with pytest.raises(StudioError):
        make_windows(10, 1)


def _result(**kw) -> EvalResult:
    base = dict(ppl=10.0, ppl_reference=10.0, kld_mean=0.0, kld_median=0.0, kld_p99=0.0, kld_max=0.0,
                top1_agreement=1.0, tokens=4000, windows=8, context=512, kld_exact=True, kld_tail_mass=None,
                reference_confidence=0.6,
                mode="together", cache="none", output="o", reference="r", text="t", seconds=1.0)
    base.update(kw)
    return EvalResult(**base)


@pytest.mark.parametrize("kw,label", [
    ({}, "near-lossless"),
    ({"ppl": 10.3, "kld_mean": 0.1, "top1_agreement": 0.92}, "good"),
    ({"ppl": 11.5, "kld_mean": 0.04, "top1_agreement": 0.97}, "good"),  # one figure alone does not decide
    ({"ppl": 11.5, "kld_mean": 0.2, "top1_agreement": 0.85}, "noticeably damaged"),
    ({"kld_mean": 0.7}, "noticeably damaged"),  # a badly damaged figure is never outvoted below this
    ({"ppl": 13.0, "kld_mean": 0.7, "top1_agreement": 0.7}, "badly damaged"),
])
def test_verdict_rules_of_thumb(kw, label):
    v = make_verdict(_result(**kw))
    assert v.label == label
    assert len(v.findings) == 3 and all(f.meaning.endswith(".") and "Rule of thumb" in f.rule for f in v.findings)
    assert "rules of thumb, not promises" in v.caveats[0]


def test_verdict_caveats():
    v = make_verdict(_result(tokens=300, ppl=9.0))
    text = " ".join(v.caveats)
    assert "noisy" in text and "not an improvement" in text and "near-ties" not in text


def test_top1_is_not_counted_when_the_reference_is_unsure():
    sure = make_verdict(_result(top1_agreement=0.7))
    unsure = make_verdict(_result(top1_agreement=0.7, reference_confidence=0.1))
    assert sure.label == "noticeably damaged" and unsure.label == "near-lossless"
    assert not unsure.findings[2].counted and "near-ties" in " ".join(unsure.caveats)


def test_to_dict_is_json():
    d = json.loads(json.dumps(_result(ppl=10.5).to_dict()))
    for key in ("ppl", "ppl_reference", "kld_mean", "top1_agreement", "tokens", "windows", "verdict"):
        assert key in d
    assert d["ppl_increase"] == pytest.approx(0.05)


def test_bad_input_is_one_sentence(tmp_path, reference):
    with pytest.raises(StudioError, match="does not exist"):
        evaluate(tmp_path / "nope", tmp_path / "nope2", tokens=np.arange(100))
    with pytest.raises(StudioError, match="does not exist"):
        evaluate((reference, None), (reference, None), text_path=tmp_path / "missing.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(StudioError, match="UTF-8"):
        evaluate((reference, None), (reference, None), text_path=tmp_path / "bin.txt")
    with pytest.raises(StudioError, match="tokens"):
        evaluate((reference, None), (reference, None), tokens=np.arange(1))
    other = llama.Model(llama.ModelArgs(model_type="llama", hidden_size=64, num_hidden_layers=1,
                                        intermediate_size=128, num_attention_heads=4, rms_norm_eps=1e-5,
                                        vocab_size=VOCAB * 2))
    with pytest.raises(StudioError, match="same model family"):
        evaluate((other, None), (reference, None), tokens=np.arange(100))


def test_parameters_identity_tracks_weights(reference, damaged):
    assert lc.parameters_identity(reference) == lc.parameters_identity(reference)
    assert lc.parameters_identity(reference) != lc.parameters_identity(damaged)
    assert len(tree_flatten(reference.parameters())) > 0


# --- model folders and the `eval` command ----------------------------------------------------------

TEXT = ("The studio converts a model, then checks it against the model it came from. "
        "A good quant keeps the next-token distribution close to the reference's. ") * 12


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny bf16 llama in HF layout (with a tokenizer), its 3-bit MLX quant, and a text file."""
    from factory import make_tiny_model
    from mlx_lm import convert

    root = tmp_path_factory.mktemp("eval")
    ref = make_tiny_model("llama", root / "ref")
    out = root / "q3"
    convert(str(ref), str(out), quantize=True, q_bits=3, q_group_size=32)
    text = root / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    return ref, out, text


def _eval_json(capsys, *args) -> dict:
    from studio.main import main

    capsys.readouterr()
    assert main(["eval", *map(str, args), "--json"]) == 0
    shown = capsys.readouterr()
    # Progress reaches stderr with --json too, as plain lines when stderr is not a terminal.
    assert "window 1/" in shown.err and "\r" not in shown.err
    return json.loads(shown.out)


def test_cli_json(folders, tmp_path, capsys):
    ref, out, text = folders
    d = _eval_json(capsys, out, "--reference", ref, "--text", text, "--context", 64, "--max-tokens", 256,
                   "--cache-dir", tmp_path)
    for key in ("ppl", "ppl_reference", "kld_mean", "top1_agreement", "tokens", "windows", "verdict"):
        assert key in d, key
    assert d["kld_mean"] > 0 and d["ppl"] != d["ppl_reference"] and d["mode"] == "together"
    assert d["tokens"] == sum(w["tokens"] for w in d["per_window"]) and d["windows"] == len(d["per_window"])
    # The same figures as the core on the same text.
    r = evaluate(out, ref, text=TEXT, context=64, max_tokens=256)
    assert d["kld_mean"] == pytest.approx(r.kld_mean, rel=1e-6) and d["ppl"] == pytest.approx(r.ppl, rel=1e-6)
    # A model against itself, through the command.
    same = _eval_json(capsys, ref, "--reference", ref, "--text", text, "--context", 64, "--max-tokens", 100)
    assert same["kld_mean"] == 0.0 and same["top1_agreement"] == 1.0 and same["tokens"] <= 100


def test_cli_cache_by_folder_identity(folders, tmp_path, capsys):
    ref, out, text = folders
    # (Quantized bf16 models are slow on MLX's CPU backend, so few tokens.)
    args = [out, "--reference", ref, "--text", text, "--max-tokens", 192, "--context", 64, "--cache-dir", tmp_path]
    first = _eval_json(capsys, *args, "--mode", "cached")
    again = _eval_json(capsys, *args)  # auto finds the cache: the reference is not loaded
    assert (first["cache"], again["cache"], again["mode"]) == ("written", "reused", "cached")
    assert again["kld_mean"] == first["kld_mean"] and again["ppl_reference"] == first["ppl_reference"]
    together = _eval_json(capsys, *args, "--mode", "together")
    assert together["kld_mean"] == pytest.approx(first["kld_mean"], rel=1e-6)
    # Other windows mean another cache entry.
    other = _eval_json(capsys, *args[:-4], "--context", 32, "--cache-dir", tmp_path, "--mode", "cached")
    assert other["cache"] == "written" and len(list(tmp_path.glob("ref-*"))) == 2


def test_cli_table_and_errors(folders, tmp_path, capsys):
    from studio.main import main

    ref, out, text = folders
    assert main(["eval", str(out), "--reference", str(ref), "--text", str(text), "--context", "64",
                 "--max-tokens", "128"]) == 0
    shown = capsys.readouterr().out
    for words in ("perplexity, reference", "KL divergence from the reference, mean", "90 / 95 / 99 / 99.9th percentile",
                  "top-1 agreement", "RMS Δp", "computed on", "CPU: quantized weights dequantized once", "Verdict:",
                  "rules of thumb"):
        assert words in shown
    for argv, words in [
        (["eval", str(tmp_path / "missing"), "--reference", str(ref)], "does not exist"),
        (["eval", str(out), "--reference", str(tmp_path)], "no config.json"),
        (["eval", str(out), "--reference", str(ref), "--text", str(tmp_path / "none.txt")], "does not exist"),
        (["eval", str(out), "--reference", str(ref), "--context", "1"], "--context"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err


def test_moe_folder_in_bf16_runs_on_cpu(tiny_model):
    """Unquantized experts need the float32 cast on CPU; a model against itself then gives KL 0."""
    moe = tiny_model("qwen3_moe")
    r = evaluate(moe, moe, text=TEXT, context=64, max_tokens=128)
    assert r.kld_mean == 0.0 and r.top1_agreement == 1.0 and math.isfinite(r.ppl)


def test_bundled_sample_text_is_the_default(folders):
    ref, _, _ = folders
    r = evaluate(ref, ref, max_tokens=130, context=64)  # 2 windows; a 2-token tail is dropped
    assert r.text == "the bundled sample text" and (r.windows, r.tokens) == (2, 126) and r.kld_mean == 0.0


@pytest.mark.parametrize("mode", ["together", "cached"])
def test_a_cancelled_evaluation_frees_both_models(folders, tmp_path, mode):
    """The models loaded from folders are freed when the run is cancelled, not only when it finishes,
    even while the caller still holds the exception (as the window's worker does)."""
    import gc

    ref, out, text = folders
    gc.collect()
    mx.clear_cache()
    before = mx.get_active_memory()
    stop = CancelToken()

    def progress(p):
        if p.stage != "reference":  # in cached mode: once the output is loaded
            stop.cancel()

    with pytest.raises(EvalCancelled) as caught:
        evaluate(out, ref, text=TEXT, context=64, max_tokens=256, mode=mode, cache_dir=tmp_path,
                 progress=progress, cancel=stop)
    assert caught.value.__traceback__ is not None  # held, frames and all
    assert mx.get_active_memory() - before < 64 * 1024  # the models take about 2 MB


@pytest.mark.parametrize("source_format", ["f32", "bf16", "fp8"])
def test_memory_fit_counts_the_reference_in_its_own_dtype(tmp_path, source_format):
    """Dequantized to float32 (the CPU path) a model takes 4 bytes a weight whatever its files hold: an f32
    reference as much as its files, an FP8 one four times. The old rule (twice the files, as if 16-bit)
    refused an f32 pair that fits and let an FP8 pair through that does not."""
    from factory import make_tiny_model, param_count

    from studio.core.evaluate.run import fits_together, memory_bytes

    ref = make_tiny_model("llama", tmp_path / source_format, source_format=source_format)
    _, params, _ = param_count(ref)
    need = 2 * 4 * params  # the reference and (here, itself as) the output, float32
    have = memory_bytes()
    assert fits_together(ref, ref, "dequantized", fraction=1.01 * need / have)
    assert not fits_together(ref, ref, "dequantized", fraction=0.99 * need / have)


def _truncate(folder):
    path = folder / "logprobs.npy"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _scribble(folder):  # same size, other bytes: a stray write, a bad disk
    path = folder / "nll.npy"
    data = bytearray(path.read_bytes())
    data[-64:] = bytes(64)
    path.write_bytes(bytes(data))


def _lose_meta(folder):
    (folder / "meta.json").unlink()


@pytest.mark.parametrize("damage", [_truncate, _scribble, _lose_meta])
def test_a_broken_cache_is_discarded_and_written_again(reference, damaged, tokens, tmp_path, damage):
    first = evaluate((damaged, None), (reference, None), tokens=tokens, context=CONTEXT, mode="cached",
                     cache_dir=tmp_path)
    (folder,) = tmp_path.glob("ref-*")
    keep = tmp_path / "ref-of-another-model"  # the user's other caches are not touched
    keep.mkdir()
    (keep / "meta.json").write_text("{}")
    damage(folder)
    again = evaluate((damaged, None), (reference, None), tokens=tokens, context=CONTEXT, mode="cached",
                     cache_dir=tmp_path)
    assert again.cache == "written"
    assert again.kld_mean == first.kld_mean and again.ppl_reference == first.ppl_reference
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([folder.name, keep.name])
    assert (keep / "meta.json").read_text() == "{}"
    third = evaluate((damaged, None), (reference, None), tokens=tokens, context=CONTEXT, mode="cached",
                     cache_dir=tmp_path)
    assert third.cache == "reused" and third.kld_mean == first.kld_mean
