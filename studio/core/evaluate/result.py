"""What an evaluation found: the figures, how they were computed, and their JSON form.

Pure Python and numpy (no MLX), so the window and the model card read results
without loading a model. The keys of ``to_dict`` are the stable keys of
``eval --json`` and ``evaluation.json`` (the README lists them).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np

JSON_FORMAT = "configi-studio.evaluation"
JSON_VERSION = 2


class EvalCancelled(Exception):
    """The user cancelled the evaluation (not an error: nothing is left half-written)."""


@dataclass
class WindowStats:
    start: int  # index of the window's first token
    tokens: int  # finite positions scored in it
    ppl_reference: float | None
    ppl: float | None
    kld_mean: float | None
    top1_agreement: float | None


@dataclass
class EvalResult:
    # Figures (None when no position was finite); see ``studio.core.evaluate.stats`` for their definitions.
    ppl: float | None
    ppl_reference: float | None
    kld_mean: float | None
    kld_median: float | None
    kld_p99: float | None
    kld_max: float | None
    top1_agreement: float | None
    tokens: int  # positions in the figures (predictions compared, NaN/inf ones left out)
    windows: int
    context: int
    kld_exact: bool  # False when KL came from a top-k reference cache (a lower bound)
    kld_tail_mass: float | None  # mean reference mass outside the cached top-k
    reference_confidence: float | None  # mean probability the reference gives its own top token
    mode: str  # "together" or "cached"
    cache: str  # "none", "written" or "reused"
    output: str
    reference: str
    text: str
    seconds: float
    ppl_stderr: float | None = None
    ppl_reference_stderr: float | None = None
    ln_ppl_ratio: float | None = None
    ln_ppl_ratio_stderr: float | None = None
    kld_stderr: float | None = None
    kld_p90: float | None = None
    kld_p95: float | None = None
    kld_p999: float | None = None
    top1_agreement_stderr: float | None = None
    dp_mean: float | None = None
    dp_mean_stderr: float | None = None
    dp_rms: float | None = None
    dp_rms_stderr: float | None = None
    positions: int | None = None  # every position scored, finite or not
    nonfinite_output: int = 0  # positions whose output logits held NaN or inf
    nonfinite_reference: int = 0
    scored: str = "all"  # "all" positions of each window, or its "second-half" (as llama.cpp)
    compute_device: str = "?"  # "cpu" or "gpu"
    compute_path: str = "?"  # "dequantized_float32" or "quantized_kernels"
    per_window: list[WindowStats] = field(default_factory=list)
    per_position_kld: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.positions is None:
            self.positions = self.tokens

    @property
    def has_figures(self) -> bool:
        return self.ppl is not None and self.kld_mean is not None

    @property
    def ppl_increase(self) -> float | None:
        """Relative perplexity increase of the output over the reference (0.03 = 3% worse)."""
        if not self.has_figures or not self.ppl_reference:
            return None
        return self.ppl / self.ppl_reference - 1.0

    @property
    def nonfinite(self) -> int:
        """Positions left out because a model's logits held NaN or inf."""
        return (self.positions or 0) - self.tokens

    def compute_sentence(self) -> str:
        """Which compute path produced the figures, in words."""
        return compute_sentence(self.compute_device, self.compute_path)

    def verdict(self):
        from studio.core.evaluate.verdict import make_verdict

        return make_verdict(self)

    def to_dict(self) -> dict:
        skip = {"per_window", "per_position_kld"}
        d = {"format": JSON_FORMAT, "version": JSON_VERSION}
        d.update({f.name: _finite_or_none(getattr(self, f.name)) for f in fields(self) if f.name not in skip})
        d["ppl_increase"] = self.ppl_increase
        d["per_window"] = [{k: _finite_or_none(v) for k, v in asdict(w).items()} for w in self.per_window]
        d["verdict"] = self.verdict().to_dict()
        return d


def _finite_or_none(value):
    """JSON has no NaN: a non-finite float is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


PATH_WORDS = {
    "dequantized_float32": "quantized weights dequantized once to their stored values, float32 compute",
    "quantized_kernels": "MLX quantized kernels",
    "float32": "float32 compute",
}


def compute_sentence(device: str, path: str) -> str:
    where = {"cpu": "CPU", "gpu": "GPU (Metal)"}.get(device, device)
    return f"{where}: {PATH_WORDS.get(path, path)}"
