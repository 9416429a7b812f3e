"""The verdict on an evaluation: each figure judged by a rule of thumb, then weighed together.

Pure Python. Three figures are judged (perplexity increase, mean KL, top-1
agreement), each to a level: near-lossless, good, noticeably damaged, badly
damaged. The verdict weighs the figures it counts equally (the mean of their
levels, a half rounded toward the worse level), so one figure alone cannot
overrule the others; but a figure that reads "badly damaged" keeps the verdict
at "noticeably damaged" or worse, and NaN/inf in the output's logits set a
floor of their own. The summary names the figure that drove the verdict.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

from studio.core.formatting import nats

LEVELS = ("near-lossless", "good", "noticeably damaged", "badly damaged")

# Rules of thumb from common practice with quantized LLMs; thresholds are where
# each level begins. They are not promises: see the caveats in the verdict.
PPL_INCREASE_RULE = (0.01, 0.05, 0.20)  # relative increase: <1%, <5%, <20%, worse
KLD_RULE = (0.05, 0.15, 0.5)  # nats: <0.05, <0.15, <0.5, worse
TOP1_RULE = (0.95, 0.90, 0.80)  # agreement: >=95%, >=90%, >=80%, worse
# Below this mean probability of its own top token the reference is mostly
# choosing between near-ties, so top-1 agreement measures coin flips, not damage.
CONFIDENT_REFERENCE = 0.25
# Share of positions with NaN/inf output logits from which the output is badly damaged.
NONFINITE_BAD = 0.01
FEW_TOKENS = 1000


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
    drivers: list[str] = field(default_factory=list)  # the figure(s) that decided the level

    def to_dict(self) -> dict:
        return asdict(self)


def _level_up(value: float, bounds: Sequence[float]) -> int:
    """Level for a figure where smaller is better."""
    return next((i for i, b in enumerate(bounds) if value < b), len(bounds))


def _level_down(value: float, bounds: Sequence[float]) -> int:
    """Level for a figure where larger is better."""
    return next((i for i, b in enumerate(bounds) if value >= b), len(bounds))


def relative_change(increase: float) -> str:
    """A relative change people can read: "+0.42%", "-1.3%", or "x275,000" once it is tenfold or more."""
    ratio = 1.0 + increase
    if ratio >= 10:
        rounded = float(f"{ratio:.3g}")
        return f"x{rounded:,.0f}" if rounded >= 1000 else f"x{rounded:g}"
    return f"{increase:+.2%}"


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _findings(r) -> list[Finding]:
    inc = r.ppl_increase
    return [
        Finding(
            "perplexity", f"{r.ppl:.3f} vs {r.ppl_reference:.3f} reference ({relative_change(inc)})",
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


def _nonfinite_finding(r) -> Finding | None:
    if not r.nonfinite_output:
        return None
    share = r.nonfinite_output / max(r.positions or 0, 1)
    level = 3 if share >= NONFINITE_BAD else 2
    return Finding(
        "NaN/inf outputs", f"{r.nonfinite_output:,} of {r.positions:,} positions ({share:.2%})",
        "Positions where the output's logits held NaN or inf (a layer overflowed); they are left out of "
        "the other figures, and the model would produce garbage there.",
        "Any is at least noticeable damage; 1% or more is bad.",
        level, LEVELS[level])


def _weigh(counted: list[Finding]) -> tuple[int, list[str], str]:
    """The one rule that gives the verdict's level, the figures that decided it and the words for them.

    The level is the mean of the counted levels, a half rounded toward the worse level, never better than
    "noticeably damaged" while one figure reads "badly damaged". The figures that decided it are those at
    that level; when none is (the mean falls between figures), those nearest below it, which pulled it
    down; when the floor set it, the badly damaged figure. So a driver never reads better or worse than
    the headline without the sentence saying why."""
    levels = [f.level for f in counted]
    level = math.floor(sum(levels) / len(levels) + 0.5)
    if max(levels) == 3 and level < 2:
        level = 2  # one badly damaged figure is never outvoted to "good"
        drivers = [f for f in counted if f.level == 3]
        how = (f"{_join([f.name for f in drivers])} {_reads(drivers)} badly damaged, which alone keeps the "
               f"verdict at {LEVELS[2]}")
    elif any(f.level == level for f in counted):
        drivers = [f for f in counted if f.level == level]
        how = f"{_join([f.name for f in drivers])} {_reads(drivers)} {LEVELS[level]} and set it"
    else:
        below = min(f.level for f in counted if f.level > level)
        drivers = [f for f in counted if f.level == below]
        how = f"{_join([f.name for f in drivers])} {_reads(drivers)} {LEVELS[below]} and pulled it down to {LEVELS[level]}"
    rest = [f for f in counted if f not in drivers]
    if not rest:
        why = {3: "all three figures agree", 2: "both figures it counts agree"}.get(len(counted), how)
    else:
        others = "; ".join(f"{f.name} {f.label}" for f in rest)
        why = f"weighing the {len(counted)} figures equally: {how}; {others}"
    return level, [f.name for f in drivers], why


def _reads(figures: list[Finding]) -> str:
    return "reads" if len(figures) == 1 else "read"


def make_verdict(r) -> Verdict:
    caveats = [
        f"These are rules of thumb, not promises: they measure agreement with the reference on "
        f"{r.tokens:,} tokens of one text, not reasoning, long context or instruction following.",
    ]
    if r.nonfinite_reference:
        caveats.append(f"The reference's own logits held NaN or inf at {r.nonfinite_reference:,} positions; "
                       "those positions are left out of every figure.")
    broken = _nonfinite_finding(r)
    if not r.has_figures:
        findings = [broken] if broken else []
        why = ("every position's logits held NaN or inf" if broken
               else "no position gave finite figures, so nothing could be compared")
        return Verdict(3, LEVELS[3], f"The output cannot be judged good: {why}.", findings, caveats,
                       [broken.name] if broken else [])

    findings = _findings(r)
    counted = [f for f in findings if f.counted]
    level, drivers, why = _weigh(counted)
    if broken is not None:
        findings.append(broken)
        if broken.level >= level:
            level, drivers = broken.level, [broken.name]
            why = f"the output's logits held NaN or inf at {broken.value}"
    summary = f"By these rules of thumb the output looks {LEVELS[level]} next to the reference on this text ({why})."

    inc = r.ppl_increase
    if r.reference_confidence < CONFIDENT_REFERENCE:
        caveats.append(f"The reference is rarely sure of the next token here (its top choice averages "
                       f"{r.reference_confidence:.1%} probability), so top-1 agreement mostly counts near-ties "
                       "and is left out of the verdict; trust the KL divergence.")
    if r.tokens < FEW_TOKENS:
        caveats.append(f"Only {r.tokens:,} tokens were scored, so the figures are noisy; use more text "
                       "for a firmer answer.")
    if inc < 0:
        caveats.append("The output's perplexity is lower than the reference's; on one text that is noise "
                       "or luck, not an improvement.")
    if not r.kld_exact:
        tail = f"{r.kld_tail_mass:.2%}" if r.kld_tail_mass is not None else "an unknown share"
        caveats.append(f"KL was computed from the reference's top tokens only, with the rest merged into one "
                       f"bucket ({tail} of the probability on average), so it is a slight underestimate.")
    return Verdict(level, LEVELS[level], summary, findings, caveats, drivers)
