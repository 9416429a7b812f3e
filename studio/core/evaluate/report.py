"""An evaluation's figures as (name, value) text rows: one wording for the card, the terminal and the window."""

from __future__ import annotations

from studio.core.evaluate.defaults import KLD_PERCENTILES
from studio.core.evaluate.stats import percentile_key
from studio.core.evaluate.verdict import relative_change
from studio.core.formatting import nats

MISSING = "–"


def plus_minus(value: float | None, error: float | None, fmt) -> str:
    if value is None:
        return MISSING
    return fmt(value) if not error else f"{fmt(value)} ± {fmt(error)}"


def _fixed(digits: int):
    return lambda v: f"{v:.{digits}f}"


def _percent(v: float) -> str:
    return f"{v:.2%}"


def kld_percentiles_text(r) -> str:
    values = [getattr(r, percentile_key(p)) for p in KLD_PERCENTILES]
    return MISSING if None in values else " / ".join(nats(v) for v in values)


def percentile_names() -> str:
    return " / ".join(f"{p:g}" for p in KLD_PERCENTILES)


def nonfinite_text(r) -> str:
    if not r.nonfinite:
        return "none"
    return (f"{r.nonfinite:,} of {r.positions:,} positions left out "
            f"(output {r.nonfinite_output:,}, reference {r.nonfinite_reference:,})")


FIGURE_NAMES = (
    ("ppl", "perplexity, this model"),
    ("ppl_reference", "perplexity, reference"),
    ("ln_ppl_ratio", "ln(PPL(Q)/PPL(base))"),
    ("kld_mean", "KL divergence from the reference, mean (nats)"),
    ("kld_median", "KL divergence, median"),
    ("kld_percentiles", f"KL divergence, {percentile_names()}th percentile"),
    ("kld_max", "KL divergence, max"),
    ("top1_agreement", "same top token as the reference (top-1 agreement)"),
    ("dp_rms", "RMS Δp, change in the true token's probability"),
    ("nonfinite", "NaN/inf in the logits"),
    ("tokens", "tokens scored"),
    ("compute", "computed on"),
)


def figure_rows(r) -> list[tuple[str, str, str]]:
    """(key, name, value) of every figure of an ``EvalResult`` with its standard error, in reading order."""
    inc = r.ppl_increase
    reference = plus_minus(r.ppl_reference, r.ppl_reference_stderr, _fixed(4))
    if inc is not None:
        reference += f" (this model {relative_change(inc)})"
    values = {
        "ppl": plus_minus(r.ppl, r.ppl_stderr, _fixed(4)),
        "ppl_reference": reference,
        "ln_ppl_ratio": plus_minus(r.ln_ppl_ratio, r.ln_ppl_ratio_stderr, _fixed(5)),
        "kld_mean": plus_minus(r.kld_mean, r.kld_stderr, nats),
        "kld_median": MISSING if r.kld_median is None else nats(r.kld_median),
        "kld_percentiles": kld_percentiles_text(r),
        "kld_max": MISSING if r.kld_max is None else nats(r.kld_max),
        "top1_agreement": plus_minus(r.top1_agreement, r.top1_agreement_stderr, _percent),
        "dp_rms": plus_minus(r.dp_rms, r.dp_rms_stderr, _percent),
        "nonfinite": nonfinite_text(r),
        "tokens": f"{r.tokens:,} in {r.windows} windows of {r.context}"
                  + (" (second half of each, as llama.cpp)" if r.scored == "second-half" else ""),
        "compute": r.compute_sentence(),
    }
    return [(key, name, values[key]) for key, name in FIGURE_NAMES]
