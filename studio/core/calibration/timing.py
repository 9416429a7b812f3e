"""How long a conversion takes with its calibration pass: the estimate before, the ETA during.

Testers were told "about 2m 27s" for a calibrated conversion that took 28.5 minutes, 25.5 of
them calibrating: the estimate counted the bytes to convert and nothing else.

Before: the calibration pass costs about `calibration_work` units (every calibration token
through every decoder layer's active weights, an MoE layer's top-k experts and no more, plus
reading and dequantizing each weight once), at the rate this machine's last pass reached
(remembered in the calibration cache folder, so the window and the command line share it) or a
typical CPU rate, named as such, before the first. A pass the cache already holds costs nothing.

During: `PhasedProgress` turns the pass's progress and then the converter's into one `Progress`
stream over both steps: the step named ("step 1 of 2: calibrating"), one bar over both (each
step weighted by its expected time, corrected by what the running step has measured), and an
ETA for all that is left.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

from studio import __version__
from studio.core.calibration import corpus as corpus_module

# Source bytes a second of a plain conversion on a CPU with error measurement, roughly.
TYPICAL_CONVERT_RATE = 150e6
# Multiply-adds a second of the calibration pass on MLX's CPU backend (the demo model on a 2-core
# x86-64 CPU shared by other jobs: 1.34e10 units in 83 s); Apple silicon is faster, so before
# the first pass this errs long.
TYPICAL_CALIBRATION_RATE = 1.6e8
# The learned method runs a few hundred optimizer steps a layer on top of the gptq pass, on twice its
# text. Measured (bench/bench_calibration_methods.py, 200 steps, both methods on the same tokens):
# 9.5x the gptq conversion on the Austen Mixtral (64x256 tokens), 10.9x on SmolLM2's first 8 layers
# (50x256); against gptq on its own default half of the text, about 20x. Until this machine has run
# it once (then its own rate is remembered, per method).
LEARNED_SLOWDOWN = 20
# Reading a weight, dequantizing it and freeing it costs about as much as this many tokens through it.
DEQUANTIZE_TOKENS = 4
RECORD_NAME = "timing.json"


def calibration_tokens() -> int:
    """Tokens of the calibration pass (the corpus is cut into this many, when it has enough text)."""
    return corpus_module.DEFAULT_SEQUENCES * corpus_module.DEFAULT_LENGTH


def active_top_k(text_config: dict, experts: int) -> int:
    """Experts each token visits in an MoE layer (the config's top-k; all of them when it says nothing)."""
    for key in ("num_experts_per_tok", "moe_topk", "top_k", "num_experts_per_token"):
        value = text_config.get(key)
        if isinstance(value, int) and value > 0:
            return min(value, experts)
    return experts


def calibration_work(project, tokens: int | None = None) -> float:
    """Multiply-adds (give or take a constant) of the calibration pass over `project`'s layers."""
    tokens = calibration_tokens() if tokens is None else tokens
    text_config = project.inventory.text_config
    work = 0.0
    for unit in project.units:
        if unit.layer is None or unit.kind != "module":
            continue  # the embedding is a lookup, the head only sums squares
        active = unit.elements * active_top_k(text_config, unit.experts) / unit.experts
        work += tokens * active + DEQUANTIZE_TOKENS * unit.elements
    return work


def _cache_folder() -> Path:
    from studio.core.calibration.calibrate import cache_folder

    return cache_folder()


def _read_record(folder: Path) -> dict:
    try:
        record = json.loads((folder / RECORD_NAME).read_text())
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


def pass_key(project, text: str | Path | None, method: str = "gptq") -> str:
    """Names a calibration pass without tokenizing its text (which takes seconds): the source
    folder's identity, the text file's (or the bundled corpus), the method, the studio's version."""
    from studio.core.evaluate.logits_cache import folder_identity

    h = hashlib.sha256(folder_identity(project.inventory.root).encode())
    if text:
        path = Path(text)
        try:
            st = path.stat()
            h.update(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
        except OSError:
            h.update(str(path).encode())
    else:
        h.update(b"bundled")
    h.update(f"\0{method}\0{__version__}".encode())
    return h.hexdigest()[:32]


def remember_pass(project, text, seconds: float | None, method: str = "gptq", folder: Path | None = None) -> None:
    """After a pass: its key (a later estimate counts it as cached) and, when it really ran
    (`seconds`; None when it was read back from the cache), the rate it reached for `method`."""
    folder = folder or _cache_folder()
    record = _read_record(folder)
    passes = record.get("passes") if isinstance(record.get("passes"), dict) else {}
    passes[pass_key(project, text, method)] = time.time()
    record["passes"] = dict(sorted(passes.items(), key=lambda kv: -kv[1])[:64])
    if seconds is not None and seconds > 0:
        rates = record.get("rates") if isinstance(record.get("rates"), dict) else {}
        rates[method] = calibration_work(project) / seconds
        record["rates"] = rates
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RECORD_NAME).write_text(json.dumps(record))
    except OSError:
        pass  # an estimate without it is only less accurate


@dataclass(frozen=True)
class ConversionTime:
    """Expected seconds of each step, and how each was found (for the sentence the user reads)."""

    calibrating_s: float
    converting_s: float
    calibrating_how: str
    converting_how: str

    @property
    def total_s(self) -> float:
        return self.calibrating_s + self.converting_s

    @property
    def steps(self) -> int:
        return 2 if self.calibrating_how else 1


def conversion_time(project, *, calibrate: bool, text=None, method: str = "gptq", convert_rate: float = 0.0,
                    convert_how: str = "", folder: Path | None = None) -> ConversionTime:
    """The expected time of a conversion of `project`, with its calibration pass (of `method`) when
    `calibrate`. `convert_rate` (source bytes a second) is what the caller remembers of this
    machine's last conversion (the window does); 0 means a typical rate."""
    from studio.core.formatting import human_bytes

    source = project.estimate.source_bytes
    if convert_rate > 0:
        converting = source / convert_rate
        how = convert_how or f"at the {human_bytes(convert_rate)}/s of this machine's last conversion"
    else:
        converting = source / TYPICAL_CONVERT_RATE
        how = f"at a typical {human_bytes(TYPICAL_CONVERT_RATE)}/s (this machine has not converted anything yet)"
    if not calibrate:
        return ConversionTime(0.0, converting, "", how)
    record = _read_record(folder or _cache_folder())
    if pass_key(project, text, method) in (record.get("passes") or {}):
        return ConversionTime(0.0, converting, "its calibration is cached", how)
    rate = (record.get("rates") or {}).get(method) if isinstance(record.get("rates"), dict) else None
    if isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0:
        cal_how = "at the rate of this machine's last calibration pass"
    elif method == "learned":
        rate = TYPICAL_CALIBRATION_RATE / LEARNED_SLOWDOWN
        cal_how = "at a rough guess for the learned method (this machine has not run it yet)"
    else:
        rate, cal_how = TYPICAL_CALIBRATION_RATE, "at a typical CPU rate (this machine has not calibrated yet)"
    return ConversionTime(calibration_work(project) / rate, converting, cal_how, how)


class PhasedProgress:
    """One progress stream over calibrating, then converting: see the module docstring.

    `calibrating` takes the pass's `CalibrationProgress`, `converting` the converter's `Progress`;
    both hand `sink` a `Progress` with `stage`, `total_fraction` and `total_eta_s` filled in."""

    def __init__(self, sink, expected: ConversionTime):
        self.sink = sink
        self.expected = expected
        self.started = time.monotonic()
        self.calibrated_s: float | None = None  # what the pass took, once it is over
        self.shown = 0.0  # the bar never runs backwards: the conversion fills what the pass left
        self.measured = False  # the pass reported progress: it ran (a cached one reports nothing)

    def calibrating(self, p) -> None:
        from studio.core.convert.run import Progress  # loads MLX: only once a conversion runs

        self.measured = True
        if self.sink is None:
            return
        elapsed = time.monotonic() - self.started
        # The pass's own ETA once it has one (it measures this machine), else the model's.
        cal_left = p.eta_s if p.eta_s is not None else max(self.expected.calibrating_s - elapsed, 0.0)
        cal_total = elapsed + cal_left
        share = cal_total / (cal_total + self.expected.converting_s) if cal_total > 0 else 0.0
        self.shown = max(self.shown, share * p.fraction)
        self.sink(Progress(p.label, p.step, p.total, p.step, p.total, 0.0, cal_left, "calibrating",
                           stage="step 1 of 2: calibrating", total_fraction=self.shown,
                           total_eta_s=cal_left + self.expected.converting_s))

    def converting(self, p) -> None:
        if self.sink is None:
            return
        if self.calibrated_s is None:
            self.calibrated_s = time.monotonic() - self.started
            self.base = self.shown
        remaining = p.eta_s if p.eta_s is not None else self.expected.converting_s * (1 - p.fraction)
        self.shown = max(self.shown, self.base + (1 - self.base) * p.fraction)
        self.sink(replace(p, stage=f"step 2 of 2: {p.phase}", total_fraction=self.shown, total_eta_s=remaining))
