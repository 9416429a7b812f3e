"""Validate a quant: run it and its reference over the same tokens and compare their predictions.

Both models read the SAME token ids, cut into fixed windows (``context``
tokens each, at most ``max_tokens`` in all). In each window every position
predicts the next token; per position we keep each model's negative
log-likelihood of the true next token, KL(reference || output) of the two
next-token distributions (float32 log-softmax), whether both pick the same top
token, and whether either model's logits held NaN or inf. The statistics
(``eval_stats``), the verdict (``eval_verdict``) and the recording
(``eval_record``) are separate modules; this one runs the models.

Two ways to run, chosen by ``mode``:

- ``"together"``: both models in memory, window by window; KL is always exact.
- ``"cached"``: the reference runs first and its distributions go to a disk
  cache (see ``logits_cache``), the reference is freed, then the output loads
  alone. A cache from an earlier run with the same reference, tokens and
  windows is reused without loading the reference at all.
- ``"auto"`` (default): reuse a cache if there is one; otherwise together when
  both models' weights fit in memory, else cached.

How the models compute is ``compute`` (see ``compute_path``): on MLX's CPU
backend, by default, quantized weights are dequantized once and everything
runs in float32; on Metal the quantized kernels run.

Models are given as a folder path, or as an already loaded ``(model,
tokenizer)`` pair (the tokenizer may be None when ``tokens`` are given); a
model given in memory is prepared for the compute path in place.
"""

from __future__ import annotations

import gc
import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import mlx.core as mx
import numpy as np

from studio.core.runtime import compute_path
from studio.core.evaluate import footprint
from studio.core.evaluate import logits_cache as lc
from studio.core.cancel import CancelToken
from studio.core.errors import StudioError
from studio.core.evaluate.defaults import (
    DEFAULT_COMPUTE,
    DEFAULT_CONTEXT,
    DEFAULT_MAX_TOKENS,
    DEFAULT_SCORE,
    MIN_TOKENS,
    SCORE_CHOICES,
)
from studio.core.evaluate.inputs import check_folder, encode, load_tokenizer, make_windows, read_text
from studio.core.evaluate.result import EvalCancelled, EvalResult, WindowStats
from studio.core.evaluate.stats import summarize

ModelLike = Any  # str | os.PathLike | tuple[nn.Module, tokenizer | None]


class EvalProgress(NamedTuple):
    stage: str  # "reference", "output" or "together"
    done: int  # windows finished
    total: int


Progress = Callable[[EvalProgress], None]


# --- models ----------------------------------------------------------------------------------------


def _is_path(m: ModelLike) -> bool:
    return isinstance(m, (str, os.PathLike))


def load_model(path: str | os.PathLike, what: str = "model", compute: str = DEFAULT_COMPUTE):
    """(model, compute path) of an MLX model folder, set up for ``compute``."""
    from studio.core.runtime import generation

    loaded = generation.load_model(check_folder(path, what), compute=compute)
    return loaded.model, loaded.compute_path


def memory_bytes() -> int | None:
    """Physical memory of this machine, or None when unknown."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return mx.device_info().get("memory_size")


def together_bytes(reference, output, compute: str = DEFAULT_COMPUTE) -> int:
    """Bytes both model folders take in memory at once, as they will compute (see `footprint`):
    from the dtypes their headers name, not an assumed 16 bits."""
    dequantized = compute_path.resolve(compute) == "dequantized"
    cpu = compute_path.on_cpu_backend()
    return sum(footprint.folder_resident_bytes(m, dequantized, cpu) for m in (reference, output))


def fits_together(reference, output, compute: str = DEFAULT_COMPUTE, fraction: float = 0.7) -> bool:
    """Whether both models fit in `fraction` of this machine's memory as they will compute."""
    have = memory_bytes()
    return have is not None and together_bytes(reference, output, compute) <= fraction * have


def _free() -> None:
    gc.collect()
    mx.clear_cache()


def _let_go(exc: BaseException) -> None:
    """Models are freed on every way out of a run, not only at its end. A cancelled or failed run's
    exception carries its traceback, and the traceback the frames it passed through, with their
    locals: the models (in our frames, and as `self` in the model's own). The caller (the window's
    worker, a test) may keep the exception for a while, so the frames below the one handling it let
    go of their locals now; that frame deletes its own names in its `finally`."""
    traceback.clear_frames(exc.__traceback__)


def _logprobs(model, tokens: np.ndarray) -> tuple[mx.array, mx.array]:
    """(float32 log-probs of positions 0..n-2, each predicting the next token; True where a position's
    logits held NaN or inf) for one window."""
    logits = model(mx.array(tokens[None, :-1].astype(np.int32)))[0]
    bad = mx.logical_not(mx.all(mx.isfinite(logits), axis=-1))
    return lc.log_softmax(logits), bad


# --- the evaluation --------------------------------------------------------------------------------


class _Run:
    def __init__(self, progress: Progress | None, cancel: CancelToken | None):
        self.progress = progress
        self.cancel = cancel

    def check(self) -> None:
        if self.cancel is not None and self.cancel.cancelled:
            raise EvalCancelled("evaluation cancelled")

    def tick(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(EvalProgress(stage, done, total))


class _Tally:
    """Per-position figures of the output against the reference, window by window.

    With ``score="second-half"`` the first half of each window's predictions is dropped here, as
    llama.cpp scores (``first = n_ctx / 2``); the models and the cache still see every position.
    """

    NAMES = ("nll_ref", "nll_out", "kl", "same_top", "ref_top_logprob", "tail", "nonfinite_ref", "nonfinite_out")

    def __init__(self, score: str = DEFAULT_SCORE):
        self.parts: dict[str, list[np.ndarray]] = {name: [] for name in self.NAMES}
        self.per_window: list[WindowStats] = []
        self.score = score

    def add(self, start, stop, **arrays) -> None:
        skip = (stop - start) // 2 if self.score == "second-half" else 0
        arrays = {k: np.array(v)[skip:] for k, v in arrays.items() if v is not None}
        for name, value in arrays.items():
            self.parts[name].append(value)
        s = summarize(arrays["nll_ref"], arrays["nll_out"], arrays["kl"], arrays["same_top"],
                      arrays["ref_top_logprob"], None, arrays["nonfinite_ref"], arrays["nonfinite_out"])
        self.per_window.append(WindowStats(start, s["tokens"], s["ppl_reference"], s["ppl"], s["kld_mean"],
                                           s["top1_agreement"]))

    def result(self, **info) -> EvalResult:
        joined = {k: np.concatenate(v) if v else None for k, v in self.parts.items()}
        figures = summarize(**joined)
        return EvalResult(**figures, windows=len(self.per_window), per_window=self.per_window, **info)


def _vocab_mismatch(a: int, b: int) -> StudioError:
    return StudioError(f"The output predicts over {b} tokens but the reference over {a}, "
                       "so they are not the same model family.")


def evaluate(
    output: ModelLike,
    reference: ModelLike,
    *,
    text_path: str | os.PathLike | None = None,
    text: str | None = None,
    tokens: Sequence[int] | np.ndarray | None = None,
    context: int = DEFAULT_CONTEXT,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    mode: str = "auto",
    compute: str = DEFAULT_COMPUTE,
    score: str = DEFAULT_SCORE,
    cache_dir: str | os.PathLike | None = None,
    top_k: int = lc.DEFAULT_TOP_K,
    full_budget_bytes: int = lc.FULL_BUDGET_BYTES,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
) -> EvalResult:
    """Compare ``output`` against ``reference`` on the same tokens; see the module doc.

    Token source, first that is given: ``tokens``, ``text``, ``text_path``, the bundled sample.
    ``progress(EvalProgress)`` is called per window; ``cancel`` is checked between
    windows and raises ``EvalCancelled``.
    """
    if mode not in ("auto", "together", "cached"):
        raise ValueError(f"unknown mode {mode!r}")
    if score not in SCORE_CHOICES:
        raise ValueError(f"unknown score choice {score!r}")
    compute_path.resolve(compute)  # an unknown choice fails before anything loads
    if max_tokens < MIN_TOKENS:
        raise StudioError(f"The token limit must be at least {MIN_TOKENS}, not {max_tokens}.")
    t0 = time.perf_counter()
    run = _Run(progress, cancel)
    out_label = str(output) if _is_path(output) else "the output model in memory"
    ref_label = str(reference) if _is_path(reference) else "the reference model in memory"
    if _is_path(output):
        check_folder(output, "output")
    if _is_path(reference):
        check_folder(reference, "reference")

    # Tokens, from the reference's tokenizer (the output's is the same by construction).
    ref_pair = None if _is_path(reference) else reference
    if tokens is not None:
        ids, text_label = np.asarray(tokens, dtype=np.int64).reshape(-1), "the given tokens"
    else:
        if text is None:
            text, text_label = read_text(text_path)
        else:
            text_label = "the given text"
        tokenizer = load_tokenizer(reference) if ref_pair is None else ref_pair[1]
        if tokenizer is None:
            raise ValueError("a reference given in memory without a tokenizer needs `tokens`")
        ids = encode(tokenizer, text, max_tokens)
    ids = ids[:max_tokens]
    if ids.size < MIN_TOKENS:
        raise StudioError(f"The text gives only {ids.size} tokens; at least {MIN_TOKENS} are needed.")
    windows = make_windows(int(ids.size), context)
    positions = sum(b - a - 1 for a, b in windows)
    models = _Models(compute)
    info = dict(context=context, output=out_label, reference=ref_label, text=text_label, scored=score,
                compute_device=compute_path.device_name())

    # Where the reference's distributions come from.
    cache_root = Path(cache_dir) if cache_dir is not None else lc.default_cache_dir()
    ref_identity = lc.folder_identity(reference) if ref_pair is None else None
    cached = None
    if ref_identity is not None and mode != "together":
        cached = _find_cache(cache_root, ref_identity, ids, windows, compute)
    if mode == "auto":
        if cached is not None:
            mode = "cached"
        elif ref_pair is not None and not _is_path(output):
            mode = "together"
        elif ref_pair is None and _is_path(output) and not fits_together(reference, output, compute):
            mode = "cached"
        else:
            mode = "together"

    if mode == "together":
        tally = _run_together(models, output, reference, ids, windows, run, _Tally(score))
        cache_state, exact = "none", True
    else:
        cache_state = "reused"
        if cached is None and ref_identity is None:
            ref_identity = lc.parameters_identity(ref_pair[0])
            cached = _find_cache(cache_root, ref_identity, ids, windows, compute)
        if cached is None:
            cached = _build_cache(models, reference, ref_identity, cache_root, ids, windows, positions,
                                  top_k, full_budget_bytes, run)
            cache_state = "written"
        tally = _run_against_cache(models, output, cached, ids, windows, run, _Tally(score))
        exact = cached.storage == "full"
    return tally.result(kld_exact=exact, mode=mode, cache=cache_state, compute_path=models.output_path,
                        seconds=time.perf_counter() - t0, **info)


class _Models:
    """Loads (or takes) each model and sets it up for the compute path; remembers the output's path."""

    def __init__(self, compute: str):
        self.compute = compute
        self.output_path = "?"

    def acquire(self, m: ModelLike, what: str):
        if _is_path(m):
            model, path = load_model(m, what, self.compute)
        else:
            model, path = m[0], compute_path.prepare(m[0], self.compute)
        if what == "output":
            self.output_path = path
        return model


def _run_together(models: _Models, output, reference, ids, windows, run: _Run, tally: _Tally) -> _Tally:
    ref_model = out_model = None
    try:
        ref_model = models.acquire(reference, "reference")
        run.check()
        out_model = models.acquire(output, "output")
        _together_windows(ref_model, out_model, ids, windows, run, tally)
    except BaseException as exc:
        _let_go(exc)
        raise
    finally:
        del ref_model, out_model
        _free()
    return tally


def _together_windows(ref_model, out_model, ids, windows, run: _Run, tally: _Tally) -> None:
    for i, (a, b) in enumerate(windows):
        run.check()
        w = ids[a:b]
        targets = mx.array(w[1:].astype(np.int32))
        lp_ref, bad_ref = _logprobs(ref_model, w)
        lp_out, bad_out = _logprobs(out_model, w)
        if lp_ref.shape[-1] != lp_out.shape[-1]:
            raise _vocab_mismatch(lp_ref.shape[-1], lp_out.shape[-1])
        nll_ref, nll_out = lc.nll_of(lp_ref, targets), lc.nll_of(lp_out, targets)
        kl = lc.kl_full(lp_ref, lp_out)
        same = mx.argmax(lp_ref, axis=-1) == mx.argmax(lp_out, axis=-1)
        top = mx.max(lp_ref, axis=-1)
        mx.eval(nll_ref, nll_out, kl, same, top, bad_ref, bad_out)
        tally.add(a, b, nll_ref=nll_ref, nll_out=nll_out, kl=kl, same_top=same, ref_top_logprob=top,
                  nonfinite_ref=bad_ref, nonfinite_out=bad_out)
        del lp_ref, lp_out
        run.tick("together", i + 1, len(windows))


def _cache_folder(cache_root: Path, identity: str, ids, windows, compute: str) -> Path:
    # The compute path changes the reference's numbers (float32 vs its own dtype), so it is part of the key.
    return cache_root / f"ref-{lc.cache_key(identity + ':' + compute_path.resolve(compute), ids, windows)}"


def _find_cache(cache_root: Path, identity: str, ids, windows, compute: str) -> lc.ReferenceCache | None:
    """The finished cache for this reference, tokens, windows and compute path, if any."""
    return lc.ReferenceCache.open(_cache_folder(cache_root, identity, ids, windows, compute))


def _build_cache(models: _Models, reference, identity, cache_root, ids, windows, positions, top_k, budget,
                 run: _Run):
    ref_model = writer = None
    try:
        ref_model = models.acquire(reference, "reference")
        offset = 0
        for i, (a, b) in enumerate(windows):
            run.check()
            w = ids[a:b]
            lp, bad = _logprobs(ref_model, w)
            if writer is None:
                vocab = lp.shape[-1]
                storage, k = lc.choose_storage(positions, vocab, top_k, budget)
                folder = _cache_folder(cache_root, identity, ids, windows, models.compute)
                meta = {"reference": str(reference) if _is_path(reference) else "in memory", "identity": identity,
                        "windows": [list(x) for x in windows], "tokens": int(ids.size)}
                writer = lc.ReferenceCacheWriter(folder, meta, positions, vocab, storage, k)
            targets = mx.array(w[1:].astype(np.int32))
            nll = lc.nll_of(lp, targets)
            argmax = mx.argmax(lp, axis=-1).astype(mx.int32)
            mx.eval(nll, argmax, lp, bad)
            writer.write(offset, nll, argmax, lp, bad)
            offset += b - a - 1
            run.tick("reference", i + 1, len(windows))
        return writer.commit()
    except BaseException as exc:
        if writer is not None:
            writer.abort()
        _let_go(exc)
        raise
    finally:
        # Free the reference before the output loads (or the caller goes on after a failure).
        del ref_model
        _free()


def _run_against_cache(models: _Models, output, cached: lc.ReferenceCache, ids, windows, run: _Run,
                       tally: _Tally) -> _Tally:
    run.check()
    out_model = None
    try:
        out_model = models.acquire(output, "output")
        _windows_against_cache(out_model, cached, ids, windows, run, tally)
    except BaseException as exc:
        _let_go(exc)
        raise
    finally:
        del out_model
        _free()
    return tally


def _windows_against_cache(out_model, cached: lc.ReferenceCache, ids, windows, run: _Run, tally: _Tally) -> None:
    offset = 0
    for i, (a, b) in enumerate(windows):
        run.check()
        w = ids[a:b]
        n = b - a - 1
        targets = mx.array(w[1:].astype(np.int32))
        lp_out, bad_out = _logprobs(out_model, w)
        if lp_out.shape[-1] != cached.meta["vocab"]:
            raise _vocab_mismatch(cached.meta["vocab"], lp_out.shape[-1])
        nll_ref, argmax_ref, bad_ref, stored = cached.window(offset, n)
        nll_out = lc.nll_of(lp_out, targets)
        tail = None
        if cached.storage == "full":
            kl = lc.kl_full(stored[0], lp_out)
            top = mx.max(stored[0], axis=-1)
        else:
            kl, tail = lc.kl_topk(stored[0], stored[1], lp_out)
            top = mx.max(stored[1], axis=-1)
        same = argmax_ref == mx.argmax(lp_out, axis=-1).astype(mx.int32)
        mx.eval(nll_out, kl, same, top, bad_out, *(() if tail is None else (tail,)))
        tally.add(a, b, nll_ref=nll_ref, nll_out=nll_out, kl=kl, same_top=same, ref_top_logprob=top, tail=tail,
                  nonfinite_ref=bad_ref, nonfinite_out=bad_out)
        offset += n
        run.tick("output", i + 1, len(windows))
