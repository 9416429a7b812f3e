"""Block-wise learned quantization, streamed one decoder layer at a time (in the spirit of AutoRound).

    learn(project, text=None, settings=LearnSettings(), progress=None, cancel=None) -> LearnedResult

Two streams of hidden states go through the model: the float model's (h_f)
and the quantized model's (h_q). For each decoder layer, only it in memory:

1. load the float layer (mlx-lm's own classes, probes in place of its
   matrices) and run h_f through it: the target, the float model's next
   hidden state;
2. run h_q through it with the probes recording: the statistics of the inputs
   the quantized layer will really see, from which today's "gptq" method
   (quantizer.py / gptq.py, via CalibratedQuantizer) picks the start;
3. swap each quantized matrix for a stand-in holding those stock tensors and
   tune its scales and biases with MLX autograd so that the layer's output on
   h_q comes closer to the target (learned_layer.py);
4. write the layer's tensors to the store on disk, run h_q through the tuned
   layer for the next one, free the layer.

Why the quantized model's inputs and the float model's output: the layer is
trained on what it will see (the errors of every layer before it) towards
where the float model would be, so it corrects the error that reached it
instead of passing it on; trained on float inputs, each layer would be right
only in a model whose earlier layers were exact, and the errors would add up.
Measured against the other choice, the float layer on h_q as the target (each
layer fixing only its own error, as GPTQ does): KL 0.00332 vs 0.00376 on the
Austen-trained Mixtral (4-bit g64, 64 sequences, 200 steps a layer).
The held-out check in train_layer keeps a layer from fitting the calibration
tokens at the expense of others.

Peak memory: one layer (float while it is measured, then packed) plus three
copies of the calibration tokens' hidden states. The embedding and the head
are quantized as the gptq method does (CalibratedQuantizer, whose statistics
the result keeps). Results are cached like the calibration pass's, keyed by
the source, the tokens, the settings and every unit's decision.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from studio.core.calibration import corpus as corpus_module
from studio.core.calibration.calibrate import CODE, PassSteps, cache_folder
from studio.core.calibration.corpus import Corpus, load_corpus
from studio.core.calibration.learned_layer import LayerResult, LearnSettings, learns_rounding
from studio.core.calibration.learned_store import UnitStore
from studio.core.calibration.stats import CalibrationStats, UnitStats
from studio.core.cancel import CancelToken
from studio.core.code_version import code_version
from studio.core.evaluate.logits_cache import folder_identity
from studio.core.project import Project

STATS_FILE = "fallback_stats.npz"
DEFAULT_SETTINGS = LearnSettings()


@dataclass
class LearnedResult:
    store: UnitStore
    stats: CalibrationStats  # the embedding's and the head's, for CalibratedQuantizer
    key: str

    @property
    def layers(self) -> list[LayerResult]:
        return [LayerResult(*row) for row in self.store.meta["layers"]]

    @property
    def seconds(self) -> float:
        return self.store.meta["seconds"]


def cache_key(project: Project, corpus: Corpus, settings: LearnSettings) -> str:
    h = hashlib.sha256(code_version(CODE).encode())  # see studio.core.code_version
    h.update(folder_identity(project.inventory.root).encode())
    h.update(corpus.digest.encode())
    h.update(f"learned:{settings.key()}:{project.plan.float_dtype}".encode())
    decisions = [(u.path, d.action, d.bits, d.group_size, d.mode, d.dtype) for u, d in project.plan.rows()]
    h.update(json.dumps(decisions).encode())
    return h.hexdigest()[:32]


def learn(project: Project, text: str | Path | None = None, *, settings: LearnSettings | None = None,
          sequences: int | None = None, length: int | None = None, progress=None,
          cancel: CancelToken | None = None, cache_dir: Path | None = None, use_cache: bool = True) -> LearnedResult:
    settings = settings or DEFAULT_SETTINGS
    sequences = sequences or corpus_module.LEARNED_TEXT_FACTOR * corpus_module.DEFAULT_SEQUENCES
    corpus = load_corpus(project.inventory.root, text, sequences, length or corpus_module.DEFAULT_LENGTH)
    key = cache_key(project, corpus, settings)
    folder = (cache_dir or cache_folder().parent / "learned") / key
    if use_cache:
        store = UnitStore.open(folder)
        stats = CalibrationStats.load(folder / STATS_FILE) if store is not None else None
        if stats is not None:
            return LearnedResult(store, stats, key)
    store = UnitStore.create(folder)
    try:
        stats = run_learned_pass(project, corpus, store, settings, progress, cancel)
    except BaseException:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)  # a cancelled pass leaves nothing behind
        raise
    stats.save(folder / STATS_FILE)
    store.finish({**store.meta, "corpus_label": corpus.label, "tokens": int(corpus.tokens.size)})
    return LearnedResult(store, stats, key)


def run_learned_pass(project: Project, corpus: Corpus, store: UnitStore, settings: LearnSettings,
                     progress=None, cancel: CancelToken | None = None) -> CalibrationStats:
    from studio.core.calibration.layers import Skeleton

    skeleton = Skeleton(project)
    try:
        return _stream(skeleton, project, corpus, store, settings, progress, cancel)
    finally:
        skeleton.reader.close()


def _dequantized(outs, decision):
    import mlx.core as mx

    return mx.dequantize(outs[0], outs[1], outs[2] if len(outs) > 2 else None, group_size=decision.group_size,
                         bits=decision.bits, mode=decision.mode)


def _stream(skeleton, project, corpus, store, settings, progress, cancel) -> CalibrationStats:
    import mlx.core as mx

    from studio.core.calibration.convert_hook import CalibratedQuantizer

    started = time.monotonic()
    decisions = {u.path: d for u, d in project.plan.rows()}
    layers = skeleton.num_layers
    per_layer = settings.steps + 2
    total = layers * per_layer + 2

    steps = PassSteps(total, progress, cancel, started)
    check_cancel, report = steps.check_cancel, steps.report

    stats = CalibrationStats(corpus_label=corpus.label, tokens=int(corpus.tokens.size))
    fallback = CalibratedQuantizer(stats)
    tokens = mx.array(corpus.tokens)
    report(0, "embedding")
    h_f, calls = skeleton.embed(tokens)
    count = int(corpus.tokens.size)
    stats.units[skeleton.embedding.path] = UnitStats(np.full(h_f.shape[-1], float(count)), np.array(count))
    h_q = _quantized_embedding(skeleton, decisions, fallback, tokens, h_f)

    results = []
    for index in range(layers):
        check_cancel()
        base = index * per_layer + 1
        report(base, f"layer {index}")

        def on_step(step, steps, error, base=base, index=index):
            report(base + step, f"layer {index}: step {step}/{steps}")

        # In a function of its own, so nothing of layer i is referenced when layer i+1 loads.
        h_f, h_q, result = _one_layer(skeleton, index, h_f, h_q, calls[index], decisions, store, settings, check_cancel,
                                      on_step)
        skeleton.free_layer(index)
        results.append(result)

    check_cancel()
    report(total - 1, "head")
    final = skeleton.final_norm(h_q).reshape(-1, h_q.shape[-1])
    mx.eval(final)
    del h_q, h_f
    if skeleton.head is not None:
        sum_sq = np.asarray(mx.sum(final * final, axis=0), dtype=np.float64)
        stats.units[skeleton.head.path] = UnitStats(sum_sq, np.array(final.shape[0]))
    stats.seconds = time.monotonic() - started
    store.manifest["meta"] = {"layers": [[r.start_error, r.error, r.steps] for r in results],
                              "seconds": stats.seconds,
                              # train_layer holds sequences out only when there are two or more
                              "held_out": settings.holdout > 0 and corpus.tokens.shape[0] > 1}
    report(total, "done")
    return stats


def _quantized_embedding(skeleton, decisions, fallback, tokens, h_f):
    """The quantized model's first hidden states: the embedding as the conversion will write it."""
    import mlx.core as mx

    unit = skeleton.embedding
    decision = decisions.get(unit.path)
    if decision is None or decision.action != "quantize":
        return h_f
    # Only the rows the tokens use: each row is quantized on its own, and a 49,152 x 576 table's
    # search and float32 copies were the largest thing in the pass on a 2-layer SmolLM2-MoE.
    rows, inverse = np.unique(np.asarray(tokens), return_inverse=True)
    table = skeleton.values(unit)[mx.array(rows)]
    table = _dequantized(fallback(table, unit, decision, 0, table.shape[0]), decision)
    h = table[mx.array(inverse.reshape(tokens.shape))].astype(mx.float32)
    mx.eval(h)
    return h


def _start_tensors(probe, unit, decision, start):
    """The GPTQ/clip start of one probed unit, as the gptq method would write it (one expert at a time)."""
    import mlx.core as mx

    from studio.core.calibration.probes import SwitchProbe
    from studio.core.model.unit_source import unit_values

    if not isinstance(probe, SwitchProbe):
        return start(probe._weight, unit, decision, 0, unit.shape[0])
    # Each expert is written into the stacked arrays in place (MLX donates the buffer of an array
    # nothing else holds): gathering the parts and concatenating them held the packed unit twice.
    out = None
    for e in range(unit.shape[0]):
        part = start(unit_values(unit, probe._parts[e]), unit, decision, e, e + 1)
        if out is None:
            out = [mx.zeros((unit.shape[0], *t.shape[1:]), dtype=t.dtype) for t in part]
        for whole, t in zip(out, part):
            whole[e] = t[0]
        mx.eval(out)
    return out


def _float_weight(probe):
    import mlx.core as mx

    from studio.core.calibration.probes import SwitchProbe

    if isinstance(probe, SwitchProbe):
        return mx.stack([probe.expert32(e) for e in range(probe._unit.shape[0])])
    return probe.weight32()


def _one_layer(skeleton, index, h_f, h_q, call, decisions, store, settings, check_cancel, on_step):
    import mlx.core as mx

    from studio.core.calibration.convert_hook import CalibratedQuantizer
    from studio.core.calibration.layers import set_submodule
    from studio.core.calibration.learned_layer import QuantLinear, QuantSwitch, run_layer, train_layer
    from studio.core.calibration.probes import SwitchProbe
    from studio.core.convert.compute import mx_dtype

    probes = skeleton.load_layer(index)
    layer = skeleton.layer(index)
    for p in probes.values():
        p.recording = False
    target = run_layer(layer, call, h_f)
    for p in probes.values():
        p.recording = True
    run_layer(layer, call, h_q)
    layer_stats = CalibrationStats()
    for path, p in probes.items():
        p.recording = False
        layer_stats.units[path] = p.unit_stats(layer_stats.keep)  # with X^T X pooled over experts: expert GPTQ
    check_cancel()
    start = CalibratedQuantizer(layer_stats)
    base = f"{skeleton.prefix}.layers.{index}."
    modules = {}
    for path in list(probes):
        decision = decisions.get(path)
        if decision is None or decision.action != "quantize":
            continue  # kept in float: its probe stays and computes as the float layer does
        probe = probes.pop(path)
        skeleton.probes.pop(path, None)  # its float weights leave memory once its start is made
        kind = QuantSwitch if isinstance(probe, SwitchProbe) else QuantLinear
        module = kind(_start_tensors(probe, probe._unit, decision, start), probe._bias, decision.group_size,
                      decision.bits, decision.mode, mx_dtype(decision.dtype))
        if settings.rounding and module.trainable and learns_rounding(int(np.prod(probe._unit.shape))):
            module.learn_rounding(_float_weight(probe))
        set_submodule(layer, path[len(base):], module)
        modules[path] = module
        del probe
    skeleton.probes = {}
    del probes, layer_stats, start
    mx.clear_cache()  # the starts' float weights and search buffers, before the steps allocate their own
    result = train_layer(layer, call, modules, h_q, target, settings, seed=index, check_cancel=check_cancel,
                         on_step=on_step)
    for path, module in modules.items():
        store.put(path, module.stored())
    h_q = run_layer(layer, call, h_q)
    return target, h_q, result
