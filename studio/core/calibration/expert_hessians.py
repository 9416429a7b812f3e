"""Which Hessian each routed expert is quantized with: its own, a pooled one shrunk toward it, or none.

    expert_methods(unit_stats) -> int8 [experts]: OWN, POOLED or CLIP per expert
    expert_hessians(unit_stats, factors) -> ExpertHessians | None

GPTQ needs ``H = E[x x^T]`` of a projection's inputs, and a trustworthy one
takes about HESSIAN_TOKENS_PER_INPUT tokens per input channel (fewer leave it
rank-deficient, and GPTQ then fits the calibration tokens at the expense of
others). A routed expert sees only the tokens its router sends it: on a
MiniMax-M3 layer (6144 wide, 128 experts, top-4) 8,192 calibration tokens
give an expert about 256 rows against the 24,576 its own gate/up Hessian
would want. So, for expert e of a stacked projection of input width d, that
saw n_e of the N rows routed to any expert (NEED = HESSIAN_TOKENS_PER_INPUT * d):

- OWN: n_e >= NEED and the pass kept its X_e^T X_e: ``H_e = X_e^T X_e / n_e``.
- POOLED: otherwise, if N >= NEED and the pass kept the projection's X^T X
  summed over experts: the prior ``P_e = D_e^1/2 R D_e^1/2``, the pooled
  correlation R (which channels move together, learned from every expert's
  tokens) at the expert's own channel scales D_e (its mean squared activation
  per channel: d numbers, which a few tokens estimate well, unlike d^2), and
  where the expert's own X_e^T X_e was kept, shrunk toward it as a conjugate
  prior worth NEED tokens: ``H_e = (X_e^T X_e + NEED * P_e) / (n_e + NEED)``.
- CLIP: neither: the diagonal method (`calibrated_quantize`'s clipping search
  weighted by D_e).

Without the expert's own X_e^T X_e (wide experts: see probes.EXPERT_HESSIANS_BYTES)
``P_e``'s inverse is ``D_e^-1/2 R^-1 D_e^-1/2``, so one Cholesky factor of the
damped R serves every expert of the projection (`pooled_factor`): GPTQ on a
128-expert layer costs one factorisation per projection, not 128.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MIN_EXPERT_TOKENS = 8  # fewer rows than this: the expert's channel scales are its projection's mean
HESSIAN_TOKENS_PER_INPUT = 4
DAMP = 0.05  # added to the diagonal (relative to it): keeps the inverse stable for rarely seen channels
SCALE_FLOOR = 0.05  # of the mean: an expert's channel scale never drops below this (see pooled_factor)

OWN, POOLED, CLIP = 0, 1, 2
METHOD_NAMES = ("GPTQ own Hessian", "pooled/shrunk fallback", "clip-only")


def read(array):
    """A statistic kept in memory, or spilled to a .npy file by the pass (stats.CalibrationStats.keep)."""
    return None if array is None else np.load(array) if not isinstance(array, np.ndarray) else array


def need(inputs: int) -> int:
    return HESSIAN_TOKENS_PER_INPUT * inputs


def channel_scales(sum_sq: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Mean squared activation per input channel, per expert [experts, in]; an expert that saw fewer
    than MIN_EXPERT_TOKENS rows gets its projection's mean over all rows."""
    total = max(float(np.sum(count)), 1.0)
    pooled = sum_sq.sum(axis=0) / total
    counts = count[:, None]
    per_expert = sum_sq / np.maximum(counts, 1)
    return np.where(counts >= MIN_EXPERT_TOKENS, per_expert, pooled[None, :])


def expert_methods(stats) -> np.ndarray:
    """OWN / POOLED / CLIP for each expert of a stacked unit's `UnitStats` (cheap: counts only)."""
    count = np.asarray(stats.count)
    inputs = stats.sum_sq.shape[-1]
    has_own = stats.xtx is not None
    has_pooled = has_own or stats.pooled is not None
    methods = np.full(count.shape, CLIP, dtype=np.int8)
    if has_pooled and float(np.sum(count)) >= need(inputs):
        methods[:] = POOLED
    if has_own:
        methods[count >= need(inputs)] = OWN
    return methods


@dataclass
class ExpertHessians:
    """Per-expert Hessians of experts [first, first + len) of one stacked unit; slices share the factor."""

    methods: np.ndarray  # int8 [E]
    counts: np.ndarray  # [E]
    scales: np.ndarray  # [E, in]: D_e, the expert's mean squared activation per channel
    own: np.ndarray | None  # [E, in, in]: X_e^T X_e sums, where the pass kept them
    corr: np.ndarray | None  # [in, in]: the pooled correlation R
    factors: dict = field(default_factory=dict)  # shared cache: R, and the Cholesky factor of its damped inverse

    def __len__(self) -> int:
        return len(self.methods)

    def __getitem__(self, s: slice) -> "ExpertHessians":
        return ExpertHessians(self.methods[s], self.counts[s], self.scales[s],
                              None if self.own is None else self.own[s], self.corr, self.factors)

    def tally(self) -> tuple[int, int, int]:
        return tuple(int(np.sum(self.methods == m)) for m in (OWN, POOLED, CLIP))

    def floored_scales(self, e: int) -> np.ndarray:
        d = self.scales[e].astype(np.float64)
        return np.maximum(d, SCALE_FLOOR * max(float(d.mean()), 1e-30))

    def prior(self, e: int) -> np.ndarray:
        root = np.sqrt(self.floored_scales(e))
        return root[:, None] * self.corr * root[None, :]

    def dense(self, e: int) -> np.ndarray:
        """H_e as a float64 [in, in] matrix (for OWN, and for POOLED where the expert's own sums exist)."""
        n = float(self.counts[e])
        if self.methods[e] == OWN:
            return self.own[e].astype(np.float64) / n
        prior = self.prior(e)
        if self.own is None:
            return prior
        k = need(prior.shape[0])
        return (self.own[e].astype(np.float64) + k * prior) / (n + k)

    def pooled_factor(self) -> np.ndarray:
        """Upper Cholesky factor U of (R + DAMP I)^-1. For the prior with D = diag(d) the factor of
        (D^1/2 (R + DAMP I) D^1/2)^-1 is U D^-1/2, which is why channel scales are floored: a channel
        an expert barely uses would otherwise take huge error updates from the ones before it."""
        if "u" not in self.factors:
            inputs = self.corr.shape[0]
            self.factors["u"] = np.linalg.cholesky(np.linalg.inv(self.corr + DAMP * np.eye(inputs))).T
        return self.factors["u"]


def correlation(pooled: np.ndarray) -> np.ndarray:
    """X^T X -> its correlation matrix (float64); a channel no token moved is uncorrelated with unit variance."""
    p = pooled.astype(np.float64)
    diag = np.diagonal(p).copy()
    live = diag > 0
    root = np.sqrt(np.where(live, diag, 1.0))
    corr = p / root[:, None] / root[None, :]
    corr[~live, :] = 0.0
    corr[:, ~live] = 0.0
    corr[np.arange(len(diag)), np.arange(len(diag))] = 1.0
    return corr


def expert_hessians(stats, factors: dict | None = None) -> ExpertHessians | None:
    """The per-expert Hessians of a stacked unit's `UnitStats`, or None when every expert is CLIP."""
    methods = expert_methods(stats)
    if np.all(methods == CLIP):
        return None
    factors = factors if factors is not None else {}
    own = read(stats.xtx)
    corr = None
    if np.any(methods == POOLED):  # read and normalised once per unit, not once per converted chunk
        if "corr" not in factors:
            factors["corr"] = correlation(own.sum(axis=0) if own is not None else read(stats.pooled))
        corr = factors["corr"]
    count = np.asarray(stats.count)
    return ExpertHessians(methods, count, channel_scales(stats.sum_sq, count), own, corr, factors)
