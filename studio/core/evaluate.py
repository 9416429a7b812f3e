"""Validate a quant: perplexity, KL divergence and top-1 agreement against the reference model.

Both models read the SAME token ids, cut into fixed windows (``context``
tokens each, at most ``max_tokens`` in all). In each window every position
predicts the next token; we score:

- perplexity of each model: exp(mean negative log-likelihood of the true next token);
- KL(reference || output) of the two next-token distributions, in float32
  from log-softmax, averaged over positions (also median, 99th percentile, max);
- top-1 agreement: how often both models would pick the same next token.

Two ways to run, chosen by ``mode``:

- ``"together"``: both models in memory, window by window; KL is always exact.
- ``"cached"``: the reference runs first and its distributions go to a disk
  cache (see ``logits_cache``), the reference is freed, then the output loads
  alone. A cache from an earlier run with the same reference, tokens and
  windows is reused without loading the reference at all.
- ``"auto"`` (default): reuse a cache if there is one; otherwise together when
  both models' weights fit in memory, else cached.

Models are given as a folder path, or as an already loaded ``(model,
tokenizer)`` pair (the tokenizer may be None when ``tokens`` are given).
"""

from __future__ import annotations

import gc
import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import mlx.core as mx
import numpy as np

from studio.core import generation
from studio.core import logits_cache as lc
from studio.core.errors import StudioError
from studio.core.formatting import nats
from studio.core.generation import has_unquantized_experts, on_cpu_backend
from studio.core.bundled import resource

ModelLike = Any  # str | os.PathLike | tuple[nn.Module, tokenizer | None]
Progress = Callable[[str, int, int], None]  # (stage, done, total)

DEFAULT_CONTEXT = 512
DEFAULT_MAX_TOKENS = 4096
MIN_TOKENS = 2  # one prediction; the verdict warns when few tokens make the figures noisy
SAMPLE_NAME = "eval_sample.txt"


class EvalCancelled(Exception):
    """The user cancelled the evaluation (not an error: nothing is left half-written)."""


# --- results and verdict ---------------------------------------------------------------------


@dataclass
class WindowStats:
    start: int  # index of the window's first token
    tokens: int  # positions scored in it
    ppl_reference: float
    ppl: float
    kld_mean: float
    top1_agreement: float


@dataclass
class Finding:
    name: str
    value: str
    meaning: str  # what the number is, in one plain sentence
    rule: str  # the rule of thumb it was judged by
    level: int  # 0 near-lossless, 1 good, 2 noticeable, 3 badly damaged
    label: str
    counted: bool = True  # False when the figure is not meaningful here and left out of the verdict


@dataclass
class Verdict:
    level: int
    label: str
    summary: str
    findings: list[Finding]
    caveats: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


LEVELS = ("near-lossless", "good", "noticeably damaged", "badly damaged")

# Rules of thumb from common practice with quantized LLMs; thresholds are where
# each level begins. They are not promises: see the caveats in the verdict.
PPL_INCREASE_RULE = (0.01, 0.05, 0.20)  # relative increase: <1%, <5%, <20%, worse
KLD_RULE = (0.05, 0.15, 0.5)  # nats: <0.05, <0.15, <0.5, worse
TOP1_RULE = (0.95, 0.90, 0.80)  # agreement: >=95%, >=90%, >=80%, worse
# Below this mean probability of its own top token the reference is mostly
# choosing between near-ties, so top-1 agreement measures coin flips, not damage.
CONFIDENT_REFERENCE = 0.25


def _level_up(value: float, bounds: Sequence[float]) -> int:
    """Level for a figure where smaller is better."""
    return next((i for i, b in enumerate(bounds) if value < b), len(bounds))


def _level_down(value: float, bounds: Sequence[float]) -> int:
    """Level for a figure where larger is better."""
    return next((i for i, b in enumerate(bounds) if value >= b), len(bounds))


@dataclass
class EvalResult:
    ppl: float
    ppl_reference: float
    kld_mean: float
    kld_median: float
    kld_p99: float
    kld_max: float
    top1_agreement: float
    tokens: int  # positions scored (predictions compared)
    windows: int
    context: int
    kld_exact: bool  # False when KL came from a top-k reference cache (a lower bound)
    kld_tail_mass: float | None  # mean reference mass outside the cached top-k
    reference_confidence: float  # mean probability the reference gives its own top token
    mode: str  # "together" or "cached"
    cache: str  # "none", "written" or "reused"
    output: str
    reference: str
    text: str
    seconds: float
    per_window: list[WindowStats] = field(default_factory=list)
    per_position_kld: np.ndarray | None = field(default=None, repr=False)

    @property
    def ppl_increase(self) -> float:
        """Relative perplexity increase of the output over the reference (0.03 = 3% worse)."""
        return self.ppl / self.ppl_reference - 1.0

    def verdict(self) -> Verdict:
        return make_verdict(self)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("per_window", "per_position_kld")}
        d["ppl_increase"] = self.ppl_increase
        d["per_window"] = [asdict(w) for w in self.per_window]
        d["verdict"] = self.verdict().to_dict()
        return d


def make_verdict(r: EvalResult) -> Verdict:
    inc = r.ppl_increase
    findings = [
        Finding(
            "perplexity", f"{r.ppl:.3f} vs {r.ppl_reference:.3f} reference ({inc:+.1%})",
            "Perplexity is how surprised a model is by the real next token; lower is better, "
            "and what matters here is how much higher the output's is than the reference's.",
            "Rule of thumb: an increase under 1% is near-lossless, under 5% good, under 20% noticeable, "
            "above that badly damaged.",
            lvl := _level_up(inc, PPL_INCREASE_RULE), LEVELS[lvl]),
        Finding(
            "KL divergence", f"{nats(r.kld_mean)} nats mean (99th percentile {nats(r.kld_p99)})",
            "KL divergence measures how far the output's next-token probabilities drift from the "
            "reference's at each position; 0 means identical.",
            "Rule of thumb: under 0.05 is near-lossless, under 0.15 good, under 0.5 noticeable, "
            "0.5 or more badly damaged.",
            lvl := _level_up(r.kld_mean, KLD_RULE), LEVELS[lvl]),
        Finding(
            "top-1 agreement", f"{r.top1_agreement:.1%}",
            "Top-1 agreement is how often the output would pick the same most likely next token as "
            "the reference.",
            "Rule of thumb: 95% or more is near-lossless, 90% good, 80% noticeable, below 80% badly damaged.",
            lvl := _level_down(r.top1_agreement, TOP1_RULE), LEVELS[lvl],
            counted=r.reference_confidence >= CONFIDENT_REFERENCE),
    ]
    counted = [f for f in findings if f.counted]
    level = max(f.level for f in counted)
    worst = [f.name for f in counted if f.level == level]
    why = ({3: "all three figures agree", 2: "both figures it counts agree"}.get(len(counted), "")
           if len(worst) == len(counted)
           else f"judged by its worst figure{'s' if len(worst) > 1 else ''}, the {' and the '.join(worst)}")
    summary = f"By these rules of thumb the output looks {LEVELS[level]} next to the reference on this text ({why})."
    caveats = [
        f"These are rules of thumb, not promises: they measure agreement with the reference on "
        f"{r.tokens:,} tokens of one text, not reasoning, long context or instruction following.",
    ]
    if r.reference_confidence < CONFIDENT_REFERENCE:
        caveats.append(f"The reference is rarely sure of the next token here (its top choice averages "
                       f"{r.reference_confidence:.1%} probability), so top-1 agreement mostly counts near-ties "
                       "and is left out of the verdict; trust the KL divergence.")
    if r.tokens < 1000:
        caveats.append(f"Only {r.tokens:,} tokens were scored, so the figures are noisy; use more text "
                       "for a firmer answer.")
    if inc < 0:
        caveats.append("The output's perplexity is lower than the reference's; on one text that is noise "
                       "or luck, not an improvement.")
    if not r.kld_exact:
        tail = f"{r.kld_tail_mass:.2%}" if r.kld_tail_mass is not None else "an unknown share"
        caveats.append(f"KL was computed from the reference's top tokens only, with the rest merged into one "
                       f"bucket ({tail} of the probability on average), so it is a slight underestimate.")
    return Verdict(level, LEVELS[level], summary, findings, caveats)


# --- inputs --------------------------------------------------------------------------------------


def sample_text_path() -> Path:
    """The bundled evaluation text (package data)."""
    return Path(str(resource(SAMPLE_NAME)))


def read_text(text_path: str | os.PathLike | None) -> tuple[str, str]:
    """(text, label): the user's file, or the bundled sample when ``text_path`` is None."""
    path = Path(text_path) if text_path is not None else sample_text_path()
    label = str(path) if text_path is not None else "the bundled sample text"
    if not path.is_file():
        if text_path is None:
            raise StudioError("The bundled evaluation text is missing from this installation; pass --text FILE.")
        raise StudioError(f"The text file {path} does not exist.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise StudioError(f"The text file {path} is not UTF-8 text.") from None
    except OSError as exc:
        raise StudioError(f"The text file {path} cannot be read ({exc.strerror}).") from None
    if not text.strip():
        raise StudioError(f"The text file {path} is empty.")
    return text, label


def make_windows(n_tokens: int, context: int) -> list[tuple[int, int]]:
    """Non-overlapping [start, stop) windows of ``context`` tokens.

    A last, partial window is kept when it holds at least half a context (short
    windows predict with little context and would bias perplexity upward),
    or when it is the only window.
    """
    if context < 2:
        raise StudioError(f"The context must be at least 2 tokens, not {context}.")
    windows = [(s, s + context) for s in range(0, n_tokens - context + 1, context)]
    covered = windows[-1][1] if windows else 0
    rest = n_tokens - covered
    if rest >= 2 and (rest >= context // 2 or not windows):
        windows.append((covered, n_tokens))
    return windows


def _encode(tokenizer, text: str, max_tokens: int) -> np.ndarray:
    """The first ``max_tokens`` token ids of ``text``.

    Only a prefix of a long text is encoded (16 characters a token is generous;
    the whole text is encoded if the prefix falls short). ``verbose=False``
    silences Hugging Face's "longer than the maximum sequence length" notice:
    we cut the ids into windows ourselves.
    """
    def encode(t: str):
        try:
            return tokenizer.encode(t, verbose=False)
        except TypeError:  # a tokenizer without Hugging Face's keyword
            return tokenizer.encode(t)

    prefix = text[: max_tokens * 16]
    ids = encode(prefix)
    if len(ids) < max_tokens and len(prefix) < len(text):
        ids = encode(text)
    return np.asarray(ids, dtype=np.int64)[:max_tokens]


# --- models ----------------------------------------------------------------------------------------


def _is_path(m: ModelLike) -> bool:
    return isinstance(m, (str, os.PathLike))


def _check_folder(path: str | os.PathLike, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise StudioError(f"The {what} model folder {p} does not exist.")
    if not (p / "config.json").is_file():
        raise StudioError(f"The {what} folder {p} is not a model folder: it has no config.json.")
    if not any(p.glob("*.safetensors")):
        raise StudioError(f"The {what} folder {p} has no .safetensors weights.")
    return p


def prepare_for_cpu(model) -> None:
    """On the CPU backend, cast a model with unquantized MoE experts to float32 (gather_mm is float32-only there)."""
    if on_cpu_backend() and has_unquantized_experts(model):
        model.set_dtype(mx.float32)


def load_model(path: str | os.PathLike, what: str = "model"):
    """(model, tokenizer) of an MLX model folder, with the CPU float32 rule applied."""
    loaded = generation.load_model(_check_folder(path, what))
    return loaded.model, loaded.tokenizer


def load_tokenizer(path: str | os.PathLike, what: str = "reference"):
    from mlx_lm.utils import load_tokenizer as _load_tokenizer

    p = _check_folder(path, what)
    try:
        return _load_tokenizer(p)
    except (OSError, ValueError, KeyError) as exc:
        raise StudioError(f"The tokenizer of the {what} model in {p} could not be loaded ({exc}).") from None


def weights_bytes(path: str | os.PathLike) -> int:
    return sum(f.stat().st_size for f in Path(path).glob("*.safetensors"))


def memory_bytes() -> int | None:
    """Physical memory of this machine, or None when unknown."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        info = mx.device_info()
        return info.get("memory_size")


def fits_together(reference: str | os.PathLike, output: str | os.PathLike, fraction: float = 0.7) -> bool:
    """Whether both models' weights (doubled on CPU, where 16-bit MoE weights become float32) fit in memory."""
    need = weights_bytes(reference) + weights_bytes(output)
    if on_cpu_backend():
        need *= 2
    have = memory_bytes()
    return have is not None and need <= fraction * have


def _free(*objs) -> None:
    del objs
    gc.collect()
    mx.clear_cache()


def _logprobs(model, tokens: np.ndarray) -> mx.array:
    """float32 log-probs of positions 0..n-2 (each predicting the next token) for one window."""
    logits = model(mx.array(tokens[None, :-1].astype(np.int32)))
    return lc.log_softmax(logits[0])


# --- the evaluation --------------------------------------------------------------------------------


class _Run:
    def __init__(self, progress: Progress | None, cancel):
        self.progress = progress
        self.cancel = cancel

    def check(self) -> None:
        c = self.cancel
        if c is not None and (c.is_set() if isinstance(c, threading.Event) else c()):
            raise EvalCancelled("evaluation cancelled")

    def tick(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)


class _Tally:
    """Per-position figures of the output against the reference, window by window."""

    def __init__(self):
        self.nll_ref, self.nll_out, self.kl, self.agree, self.tail, self.conf = [], [], [], [], [], []
        self.per_window: list[WindowStats] = []

    def add(self, start, nll_ref, nll_out, kl, agree, ref_top_logprob, tail=None):
        nll_ref, nll_out, kl, agree = (np.array(a, dtype=np.float64) for a in (nll_ref, nll_out, kl, agree))
        self.conf.append(np.exp(np.array(ref_top_logprob, dtype=np.float64)))
        self.nll_ref.append(nll_ref)
        self.nll_out.append(nll_out)
        self.kl.append(kl)
        self.agree.append(agree)
        if tail is not None:
            self.tail.append(np.array(tail, dtype=np.float64))
        self.per_window.append(WindowStats(start, len(kl), math.exp(nll_ref.mean()), math.exp(nll_out.mean()),
                                           float(kl.mean()), float(agree.mean())))

    def result(self, **info) -> EvalResult:
        kl = np.concatenate(self.kl)
        return EvalResult(
            ppl=math.exp(np.concatenate(self.nll_out).mean()),
            ppl_reference=math.exp(np.concatenate(self.nll_ref).mean()),
            kld_mean=float(kl.mean()),
            kld_median=float(np.median(kl)),
            kld_p99=float(np.percentile(kl, 99)),
            kld_max=float(kl.max()),
            top1_agreement=float(np.concatenate(self.agree).mean()),
            tokens=int(kl.size),
            windows=len(self.per_window),
            kld_tail_mass=float(np.concatenate(self.tail).mean()) if self.tail else None,
            reference_confidence=float(np.concatenate(self.conf).mean()),
            per_window=self.per_window,
            per_position_kld=kl.astype(np.float32),
            **info,
        )


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
    cache_dir: str | os.PathLike | None = None,
    top_k: int = lc.DEFAULT_TOP_K,
    full_budget_bytes: int = lc.FULL_BUDGET_BYTES,
    progress: Progress | None = None,
    cancel: threading.Event | Callable[[], bool] | None = None,
) -> EvalResult:
    """Compare ``output`` against ``reference`` on the same tokens; see the module doc.

    Token source, first that is given: ``tokens``, ``text``, ``text_path``, the bundled sample.
    ``progress(stage, done, total)`` is called per window with stage "reference",
    "output" or "together"; ``cancel`` (an Event or a callable) is checked between
    windows and raises ``EvalCancelled``.
    """
    if mode not in ("auto", "together", "cached"):
        raise ValueError(f"unknown mode {mode!r}")
    if max_tokens < 2:
        raise StudioError(f"The token limit must be at least 2, not {max_tokens}.")
    t0 = time.perf_counter()
    run = _Run(progress, cancel)
    out_label = str(output) if _is_path(output) else "the output model in memory"
    ref_label = str(reference) if _is_path(reference) else "the reference model in memory"
    if _is_path(output):
        _check_folder(output, "output")
    if _is_path(reference):
        _check_folder(reference, "reference")

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
        ids = _encode(tokenizer, text, max_tokens)
    ids = ids[:max_tokens]
    if ids.size < MIN_TOKENS:
        raise StudioError(f"The text gives only {ids.size} tokens; at least {MIN_TOKENS} are needed.")
    windows = make_windows(int(ids.size), context)
    positions = sum(b - a - 1 for a, b in windows)
    info = dict(context=context, output=out_label, reference=ref_label, text=text_label)

    # Where the reference's distributions come from.
    cache_root = Path(cache_dir) if cache_dir is not None else lc.default_cache_dir()
    ref_identity = lc.folder_identity(reference) if ref_pair is None else None
    cached = None
    if ref_identity is not None and mode != "together":
        cached = _find_cache(cache_root, ref_identity, ids, windows)
    if mode == "auto":
        if cached is not None:
            mode = "cached"
        elif ref_pair is not None and not _is_path(output):
            mode = "together"
        elif ref_pair is None and _is_path(output) and not fits_together(reference, output):
            mode = "cached"
        else:
            mode = "together"

    if mode == "together":
        tally = _run_together(output, reference, ids, windows, run)
        cache_state, exact = "none", True
    else:
        cache_state = "reused"
        if cached is None:
            if ref_identity is None:
                ref_identity = lc.parameters_identity(ref_pair[0])
                cached = _find_cache(cache_root, ref_identity, ids, windows)
        if cached is None:
            cached = _build_cache(reference, ref_identity, cache_root, ids, windows, positions,
                                  top_k, full_budget_bytes, run)
            cache_state = "written"
        tally = _run_against_cache(output, cached, ids, windows, run)
        exact = cached.storage == "full"
    return tally.result(kld_exact=exact, mode=mode, cache=cache_state,
                        seconds=time.perf_counter() - t0, **info)


def _acquire(m: ModelLike, what: str):
    """(model, owned): load a path (owned, freed by us) or take a loaded pair (cast for CPU if needed)."""
    if _is_path(m):
        return load_model(m, what)[0], True
    prepare_for_cpu(m[0])
    return m[0], False


def _run_together(output, reference, ids, windows, run: _Run) -> _Tally:
    ref_model, _ = _acquire(reference, "reference")
    run.check()
    out_model, _ = _acquire(output, "output")
    tally = _Tally()
    for i, (a, b) in enumerate(windows):
        run.check()
        w = ids[a:b]
        targets = mx.array(w[1:].astype(np.int32))
        lp_ref = _logprobs(ref_model, w)
        lp_out = _logprobs(out_model, w)
        if lp_ref.shape[-1] != lp_out.shape[-1]:
            raise _vocab_mismatch(lp_ref.shape[-1], lp_out.shape[-1])
        nll_ref, nll_out = lc.nll_of(lp_ref, targets), lc.nll_of(lp_out, targets)
        kl = lc.kl_full(lp_ref, lp_out)
        agree = mx.argmax(lp_ref, axis=-1) == mx.argmax(lp_out, axis=-1)
        top = mx.max(lp_ref, axis=-1)
        mx.eval(nll_ref, nll_out, kl, agree, top)
        tally.add(a, nll_ref, nll_out, kl, agree, top)
        del lp_ref, lp_out
        run.tick("together", i + 1, len(windows))
    del ref_model, out_model
    _free()
    return tally


def _cache_folder(cache_root: Path, identity: str, ids, windows) -> Path:
    return cache_root / f"ref-{lc.cache_key(identity, ids, windows)}"


def _find_cache(cache_root: Path, identity: str, ids, windows) -> lc.ReferenceCache | None:
    """The finished cache for this reference, tokens and windows, if any."""
    return lc.ReferenceCache.open(_cache_folder(cache_root, identity, ids, windows))


def _build_cache(reference, identity, cache_root, ids, windows, positions, top_k, budget, run: _Run):
    ref_model, owned = _acquire(reference, "reference")
    writer = None
    try:
        offset = 0
        for i, (a, b) in enumerate(windows):
            run.check()
            w = ids[a:b]
            lp = _logprobs(ref_model, w)
            if writer is None:
                vocab = lp.shape[-1]
                storage, k = lc.choose_storage(positions, vocab, top_k, budget)
                folder = _cache_folder(cache_root, identity, ids, windows)
                meta = {"reference": str(reference) if owned else "in memory", "identity": identity,
                        "windows": [list(x) for x in windows], "tokens": int(ids.size)}
                writer = lc.ReferenceCacheWriter(folder, meta, positions, vocab, storage, k)
            targets = mx.array(w[1:].astype(np.int32))
            nll = lc.nll_of(lp, targets)
            argmax = mx.argmax(lp, axis=-1).astype(mx.int32)
            mx.eval(nll, argmax, lp)
            writer.write(offset, nll, argmax, lp)
            offset += b - a - 1
            run.tick("reference", i + 1, len(windows))
        return writer.commit()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        # Free the reference before the output loads.
        del ref_model
        _free()


def _run_against_cache(output, cached: lc.ReferenceCache, ids, windows, run: _Run) -> _Tally:
    run.check()
    out_model, _ = _acquire(output, "output")
    tally = _Tally()
    offset = 0
    for i, (a, b) in enumerate(windows):
        run.check()
        w = ids[a:b]
        n = b - a - 1
        targets = mx.array(w[1:].astype(np.int32))
        lp_out = _logprobs(out_model, w)
        if lp_out.shape[-1] != cached.meta["vocab"]:
            raise _vocab_mismatch(cached.meta["vocab"], lp_out.shape[-1])
        nll_ref, argmax_ref, stored = cached.window(offset, n)
        nll_out = lc.nll_of(lp_out, targets)
        tail = None
        if cached.storage == "full":
            kl = lc.kl_full(stored[0], lp_out)
            top = mx.max(stored[0], axis=-1)
        else:
            kl, tail = lc.kl_topk(stored[0], stored[1], lp_out)
            top = mx.max(stored[1], axis=-1)
        agree = argmax_ref == mx.argmax(lp_out, axis=-1).astype(mx.int32)
        mx.eval(nll_out, kl, agree, top, *(() if tail is None else (tail,)))
        tally.add(a, nll_ref, nll_out, kl, agree, top, tail)
        offset += n
        run.tick("output", i + 1, len(windows))
    del out_model
    _free()
    return tally
