"""The streamed calibration pass: calibration tokens through the model, one decoder layer at a time.

    calibrate(project, text=None, sensitivity=True, progress=None, cancel=None) -> CalibrationStats

Embed the calibration tokens; for each decoder layer, load it (only it) from
the source with mlx-lm's own classes, run every token's hidden state through
it while the probes collect each unit's input statistics (per expert from
the tokens the model's router sends it), optionally measure each cell's
sensitivity on the first sequences (`sensitivity_pass`: the KL it adds to the
next-token distribution, in nats), keep the outputs as the next layer's
inputs and free the layer. Then the final norm and the head. Peak
memory: one layer's weights (experts as their source bytes, one expert in
float32 at a time) plus the hidden states of the calibration tokens.

Results are cached under the user's cache folder, keyed by the source folder's
identity, the tokens and the settings, and reused when none changed.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from studio.core.calibration import corpus as corpus_module
from studio.core.calibration.corpus import Corpus, load_corpus
from studio.core.calibration.stats import CalibrationStats, UnitStats
from studio.core.cancel import CancelToken
from studio.core.code_version import code_version
from studio.core.errors import StudioError
from studio.core.evaluate.logits_cache import default_cache_dir, folder_identity
from studio.core.project import Project

BIT_OPTIONS = (2, 3, 4, 5, 6, 8)
GROUP_SIZE = 64
SEQUENCES_PER_CALL = 8  # attention memory grows with the square of the sequence length, per call
PROBE_SEQUENCES = 8  # sensitivity is measured on this many sequences (each layer's gain on fewer)


class CalibrationCancelled(StudioError):
    """The user cancelled the calibration pass."""


@dataclass(frozen=True)
class CalibrationProgress:
    step: int
    total: int
    label: str
    eta_s: float | None

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 1.0


class PassSteps:
    """A calibration pass's cancel check and its progress, with an ETA from the steps done so far
    (the gptq and learned passes count steps differently but report alike)."""

    def __init__(self, total: int, progress, cancel, started: float):
        self.total, self._progress, self._cancel, self._started = total, progress, cancel, started

    def check_cancel(self) -> None:
        if self._cancel is not None and self._cancel.cancelled:
            raise CalibrationCancelled("calibration cancelled.")

    def report(self, step: int, label: str) -> None:
        if self._progress is None:
            return
        elapsed = time.monotonic() - self._started
        eta = elapsed / step * (self.total - step) if step else None
        self._progress(CalibrationProgress(step, self.total, label, eta))


def _one_layer(skeleton, index: int, h, call, stats: CalibrationStats, measurer, check_cancel):
    """Layer `index` over every hidden state: its statistics into `stats`, its sensitivity into
    `measurer` (if any); returns its outputs. `call` passes the layer what the model's own
    `__call__` passes it (its mask above all)."""
    import mlx.core as mx

    probes = skeleton.load_layer(index)
    layer = skeleton.layer(index)

    def run(x, rows):
        y = call(layer, x, rows)
        mx.eval(y)
        return y

    outs = [run(h[a:a + SEQUENCES_PER_CALL], np.arange(a, min(a + SEQUENCES_PER_CALL, h.shape[0])))
            for a in range(0, h.shape[0], SEQUENCES_PER_CALL)]
    out = mx.concatenate(outs, axis=0) if len(outs) > 1 else outs[0]
    mx.eval(out)
    del outs
    for path, p in probes.items():
        stats.units[path] = p.unit_stats(stats.keep)  # big X^T X go to disk: memory stays flat in layers
    if measurer is not None:
        measurer.layer(index, run, probes, h, out)
    return out


def cache_folder() -> Path:
    return default_cache_dir().parent / "calibration"


# The code the statistics and sensitivities are a function of: the pass, its probes and measures
# (this package), how it reads the source (model) and builds its layers (mlx_classes); mlx and
# mlx-lm versions come with it.
# See studio.core.code_version for the rule every cache key follows.
CODE = ("studio.core.calibration", "studio.core.model", "studio.core.mlx_classes")


def cache_key(project: Project, corpus: Corpus, sensitivity: bool, bits, group_size: int) -> str:
    h = hashlib.sha256(code_version(CODE).encode())
    h.update(folder_identity(project.inventory.root).encode())
    h.update(corpus.digest.encode())
    h.update(f"{sensitivity}:{tuple(bits)}:{group_size}:{PROBE_SEQUENCES}".encode())
    return h.hexdigest()[:32]


def calibrate(project: Project, text: str | Path | None = None, *, sensitivity: bool = True,
              bits_options=BIT_OPTIONS, group_size: int = GROUP_SIZE, sequences: int | None = None,
              length: int | None = None, progress: Callable[[CalibrationProgress], None] | None = None,
              cancel: CancelToken | None = None, cache_dir: Path | None = None,
              use_cache: bool = True) -> CalibrationStats:
    corpus = load_corpus(project.inventory.root, text, sequences or corpus_module.DEFAULT_SEQUENCES,
                         length or corpus_module.DEFAULT_LENGTH)
    path = (cache_dir or cache_folder()) / f"{cache_key(project, corpus, sensitivity, bits_options, group_size)}.npz"
    if use_cache and path.exists():
        cached = CalibrationStats.load(path)
        if cached is not None:
            return cached
    folder = CalibrationStats.spill_folder(path) if use_cache else None
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)  # a stale entry's arrays; the .npz is written last
    stats = run_pass(project, corpus, sensitivity=sensitivity, bits_options=bits_options, group_size=group_size,
                     progress=progress, cancel=cancel, folder=folder)
    try:
        stats.save(path)
    except OSError:
        pass  # a cache that cannot be written only costs the next run its time
    return stats


def _mx_dtype(name: str):
    import mlx.core as mx

    return {"BF16": mx.bfloat16, "F16": mx.float16}.get(name, mx.float32)


def run_pass(project: Project, corpus: Corpus, *, sensitivity: bool = True, bits_options=BIT_OPTIONS,
             group_size: int = GROUP_SIZE, progress=None, cancel: CancelToken | None = None,
             on_layer: Callable[[int, object], None] | None = None,
             folder: Path | None = None) -> CalibrationStats:
    """The pass itself, uncached. `on_layer(i, h)` sees layer i's output hidden states as they are made;
    big arrays go to `folder` (a temporary folder, removed with the result, when None)."""
    from studio.core.calibration.layers import Skeleton

    temporary = folder is None
    folder = Path(tempfile.mkdtemp(prefix="configi-calibration-")) if temporary else folder
    skeleton = Skeleton(project)
    try:
        stats = _stream(skeleton, project, corpus, sensitivity, bits_options, group_size, progress, cancel,
                        on_layer, folder)
    except BaseException:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        skeleton.reader.close()
    if temporary:
        weakref.finalize(stats, shutil.rmtree, folder, True)
    return stats


def _stream(skeleton, project, corpus, sensitivity, bits_options, group_size, progress, cancel,
            on_layer, folder: Path) -> CalibrationStats:
    import mlx.core as mx

    from studio.core.calibration.sensitivity_pass import SensitivityPass

    started = time.monotonic()
    dtype = _mx_dtype(project.plan.float_dtype)
    stats = CalibrationStats(group_size=group_size, corpus_label=corpus.label, tokens=int(corpus.tokens.size),
                             folder=folder)
    layers = skeleton.num_layers
    total = layers + 2

    steps = PassSteps(total, progress, cancel, started)
    check_cancel, report = steps.check_cancel, steps.report

    tokens = mx.array(corpus.tokens)
    probe = min(PROBE_SEQUENCES, tokens.shape[0])
    measurer = SensitivityPass(stats, bits_options, group_size, dtype, probe, SEQUENCES_PER_CALL,
                               check_cancel) if sensitivity else None
    report(0, "embedding")
    h, calls = skeleton.embed(tokens)
    count = int(corpus.tokens.size)
    hidden = h.shape[-1]
    stats.units[skeleton.embedding.path] = UnitStats(np.full(hidden, float(count)), np.array(count))
    if measurer is not None:
        measurer.embedding(skeleton, corpus.tokens, h)

    for index in range(layers):
        check_cancel()
        report(index + 1, f"layer {index}")
        # In a function of its own: every reference to the layer (probes, closures, loop
        # variables) is gone when it returns, so the next layer never loads beside it.
        h = _one_layer(skeleton, index, h, calls[index], stats, measurer, check_cancel)
        skeleton.free_layer(index)
        if on_layer is not None:
            on_layer(index, h)

    check_cancel()
    report(layers + 1, "head")
    final = skeleton.final_norm(h).reshape(-1, hidden)
    mx.eval(final)
    del h
    if skeleton.head is not None:
        sum_sq = np.asarray(mx.sum(final * final, axis=0), dtype=np.float64)
        stats.units[skeleton.head.path] = UnitStats(sum_sq, np.array(final.shape[0]))
    if measurer is not None:
        measurer.finish(skeleton, final, corpus.tokens.shape[1])
    stats.seconds = time.monotonic() - started
    report(total, "done")
    return stats
