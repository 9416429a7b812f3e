"""The evaluation's statistics, from per-position figures, as llama.cpp's KL-divergence mode defines them.

Pure numpy (float64), no MLX: the runner (``studio.core.evaluate.run``) collects,
for every scored position, the negative log-likelihood of the true next token
under each model, the KL divergence of the output's next-token distribution
from the reference's, whether both models' top token is the same, and flags
for logits that held NaN or inf. This module turns those arrays into the
figures a GGUF or EXL3 card prints (``llama-perplexity --kl-divergence``,
``tools/perplexity/perplexity.cpp``), with the same definitions:

- a mean and its standard error: ``sqrt(var / (n - 1))`` with the population
  variance, and 0 when the variance is not positive or ``n <= 10``;
- perplexity ``exp(mean nll)`` with standard error ``ppl * se(nll)``;
- ``ln(PPL(Q)/PPL(base))`` with the standard error of a difference of two
  correlated means: ``sqrt(se_q^2 + se_b^2 - 2 cov)``, where
  ``cov = (mean(q b) - mean(q) mean(b)) / (n - 1)`` (0 below 10 positions);
- KL: mean with standard error, median (the mean of the two middle values for
  an even count), percentiles by linear interpolation between sorted values at
  ``fraction * (n - 1)`` (numpy's default), and the maximum;
- "same top p": the share of positions where both models' top token agree,
  with the binomial standard error ``sqrt(p (1 - p) / (n - 1))``;
- Δp: the output's probability of the true token minus the reference's;
  RMS Δp = ``sqrt(mean(Δp^2))``, its error ``0.5 / rms * se(Δp^2)``.

A position whose logits held NaN or inf in either model, or whose figures are
not finite, is counted and left out of every figure: one bad expert must not
turn the whole result into NaN. With no finite position left the figures are
None, never NaN.
"""

from __future__ import annotations

import math

import numpy as np

from studio.core.evaluate.defaults import KLD_PERCENTILES


def mean_and_stderr(x: np.ndarray) -> tuple[float, float]:
    """llama.cpp's ``mean_and_uncertainty``: the mean, and its standard error (0 for 10 values or fewer)."""
    n = x.size
    if n < 1:
        return 0.0, 0.0
    mean = float(x.mean())
    var = float(x.var())
    return mean, math.sqrt(var / (n - 1)) if var > 0 and n > 10 else 0.0


def covariance_of_means(a: np.ndarray, b: np.ndarray) -> float:
    """llama.cpp's ``covariance``: of the two means (0 below 10 values)."""
    n = a.size
    if n < 10:
        return 0.0
    return float((a * b).mean() - a.mean() * b.mean()) / (n - 1)


def percentile_key(p: float) -> str:
    """The JSON key of a KL percentile: 90 -> "kld_p90", 99.9 -> "kld_p999"."""
    return "kld_p" + f"{p:g}".replace(".", "")


def finite_mask(*arrays: np.ndarray, bad: tuple[np.ndarray, ...] = ()) -> np.ndarray:
    """True where every array is finite and no ``bad`` flag is set."""
    keep = np.ones(arrays[0].shape, dtype=bool)
    for a in arrays:
        keep &= np.isfinite(a)
    for b in bad:
        keep &= ~b.astype(bool)
    return keep


EMPTY_FIGURES = (
    "ppl", "ppl_stderr", "ppl_reference", "ppl_reference_stderr", "ln_ppl_ratio", "ln_ppl_ratio_stderr",
    "kld_mean", "kld_stderr", "kld_median", *(percentile_key(p) for p in KLD_PERCENTILES), "kld_max",
    "top1_agreement", "top1_agreement_stderr", "dp_mean", "dp_mean_stderr", "dp_rms", "dp_rms_stderr",
    "reference_confidence", "kld_tail_mass",
)


def summarize(nll_ref, nll_out, kl, same_top, ref_top_logprob, tail=None,
              nonfinite_ref=None, nonfinite_out=None) -> dict:
    """Every figure of the result, keyed as in ``evaluation.json``, from per-position arrays.

    Returns the figures (None where there is no finite position), ``tokens``
    (positions in the figures), ``positions`` (all scored), ``nonfinite_reference``
    and ``nonfinite_output`` (positions whose logits held NaN or inf), and
    ``per_position_kld`` (float32, the finite positions, for plots).
    """
    nll_ref, nll_out, kl, ref_top_logprob = (np.asarray(a, dtype=np.float64)
                                             for a in (nll_ref, nll_out, kl, ref_top_logprob))
    same_top = np.asarray(same_top, dtype=bool)
    n_all = kl.size
    flags_ref = np.zeros(n_all, bool) if nonfinite_ref is None else np.asarray(nonfinite_ref, bool)
    flags_out = np.zeros(n_all, bool) if nonfinite_out is None else np.asarray(nonfinite_out, bool)
    keep = finite_mask(nll_ref, nll_out, kl, ref_top_logprob, bad=(flags_ref, flags_out))
    counts = {"positions": int(n_all), "tokens": int(keep.sum()),
              "nonfinite_reference": int(flags_ref.sum()), "nonfinite_output": int(flags_out.sum())}
    if not keep.any():
        return {**dict.fromkeys(EMPTY_FIGURES), **counts, "per_position_kld": np.zeros(0, np.float32)}

    nll_ref, nll_out, kl, same_top = nll_ref[keep], nll_out[keep], kl[keep], same_top[keep]
    n = kl.size
    out_mean, out_se = mean_and_stderr(nll_out)
    ref_mean, ref_se = mean_and_stderr(nll_ref)
    cov = covariance_of_means(nll_out, nll_ref)
    ppl, ppl_ref = math.exp(out_mean), math.exp(ref_mean)
    kld_mean, kld_se = mean_and_stderr(kl)
    top1 = float(same_top.mean())
    dp = np.exp(-nll_out) - np.exp(-nll_ref)
    dp_mean, dp_mean_se = mean_and_stderr(dp)
    mse, mse_se = mean_and_stderr(dp * dp)
    rms = math.sqrt(mse)
    figures = {
        "ppl": ppl, "ppl_stderr": ppl * out_se,
        "ppl_reference": ppl_ref, "ppl_reference_stderr": ppl_ref * ref_se,
        "ln_ppl_ratio": out_mean - ref_mean,
        "ln_ppl_ratio_stderr": math.sqrt(max(out_se ** 2 + ref_se ** 2 - 2 * cov, 0.0)),
        "kld_mean": kld_mean, "kld_stderr": kld_se,
        "kld_median": float(np.median(kl)),
        **{percentile_key(p): float(np.percentile(kl, p)) for p in KLD_PERCENTILES},
        "kld_max": float(kl.max()),
        "top1_agreement": top1,
        "top1_agreement_stderr": math.sqrt(top1 * (1 - top1) / (n - 1)) if n > 1 else 0.0,
        "dp_mean": dp_mean, "dp_mean_stderr": dp_mean_se,
        "dp_rms": rms, "dp_rms_stderr": 0.5 / rms * mse_se if rms > 0 else 0.0,
        "reference_confidence": float(np.exp(ref_top_logprob[keep]).mean()),
        "kld_tail_mass": None,
    }
    if tail is not None:
        tail = np.asarray(tail, dtype=np.float64)[keep]
        figures["kld_tail_mass"] = float(tail.mean())
    return {**figures, **counts, "per_position_kld": kl.astype(np.float32)}
