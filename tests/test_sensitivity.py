"""Sensitivity in one unit: the final KL a cell adds, predicted by the streamed pass, against the
KL measured by running mlx-lm's own model with that cell (or a whole policy) quantized."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from factory import load_with_mlx_lm


@pytest.fixture(scope="module")
def measured_model(tiny_model):
    """(stats, measure) on a tiny MoE model: `measure({cell: bits})` is the mean KL of the next-token
    distributions on the probe tokens with those cells quantized as the converter would."""
    from studio.core.calibration.calibrate import PROBE_SEQUENCES, run_pass
    from studio.core.calibration.corpus import load_corpus
    from studio.core.calibration.sensitivity import round_trip
    from studio.core.project import Project

    path = tiny_model("qwen3_moe")
    project = Project.open(path, "config-i")
    # 128 tokens: too few for GPTQ's Hessians (4 per input channel), so the fast diagonal method.
    corpus = load_corpus(path, None, PROBE_SEQUENCES, 16)
    stats = run_pass(project, corpus, sensitivity=True, bits_options=(2, 4, 8))
    model, _ = load_with_mlx_lm(path)
    model.set_dtype(mx.float32)
    modules = dict(tree_flatten(model.leaf_modules(), is_leaf=nn.Module.is_module))
    tokens = mx.array(corpus.tokens)
    reference = nn.log_softmax(model(tokens))
    units = {}
    for u in project.units:
        if u.kind == "module" and u.quantizable(stats.group_size):
            units.setdefault((u.role, u.layer), []).append(u)

    def measure(choice: dict) -> float:
        saved = {}
        for cell, bits in choice.items():
            for u in units[cell]:
                module = modules[u.path]
                saved[u.path] = module.weight
                importance = stats.importance(u.path)
                module.weight = round_trip(module.weight, stats.group_size, bits, importance, mx.bfloat16,
                                           stats.hessian(u.path))
        try:
            out = nn.log_softmax(model(tokens))
            return mx.mean(mx.sum(mx.exp(reference) * (reference - out), axis=-1)).item()
        finally:
            for path, weight in saved.items():
                modules[path].weight = weight

    return stats, measure


def test_every_cell_is_in_nats_of_final_kl_as_measured(measured_model):
    """Embedding, attention, experts, router and head, each quantized alone at 2 bits: the pass's
    prediction is the KL measured at the model's output, to within a factor of two (a cell of the
    last layer to within a third). The layer-local measure it replaced is a different quantity altogether
    (a relative squared error), off by more than 5x on every role."""
    stats, measure = measured_model
    cells = [c for c in stats.sensitivity if c[1] in (None, 1)]
    assert {c[0] for c in cells} >= {"embedding", "lm_head", "attn_q", "expert_down", "router"}
    for cell in cells:
        actual = measure({cell: 2})
        predicted = stats.sensitivity[cell][2]
        assert 0.5 < predicted / actual < 2, (cell, predicted, actual)
        if cell[1] == 1:
            assert 0.75 < predicted / actual < 1.33, (cell, predicted, actual)
        if cell in stats.output_error:
            assert not 0.2 < stats.output_error[cell][2] / actual < 5, cell


def test_a_policys_summed_sensitivity_tracks_its_measured_kl(measured_model):
    """Random mixed policies: the sum over cells predicts the measured KL (within a factor of two)
    and ranks the policies as the measurement does."""
    stats, measure = measured_model
    rng = np.random.default_rng(0)
    predicted, actual = [], []
    for _ in range(4):
        choice = {cell: int(rng.choice([2, 4, 8])) for cell in stats.sensitivity}
        predicted.append(sum(stats.sensitivity[cell][bits] for cell, bits in choice.items()))
        actual.append(measure(choice))
    ratios = np.array(predicted) / np.array(actual)
    assert np.all((0.5 < ratios) & (ratios < 2)), ratios
    assert list(np.argsort(predicted)) == list(np.argsort(actual))


def test_layer_gains_fall_toward_the_output_and_the_cache_keeps_them(measured_model, tmp_path):
    from studio.core.calibration.stats import CalibrationStats

    stats, _ = measured_model
    assert set(stats.layer_gain) == {None, 0, 1} and all(g > 0 for g in stats.layer_gain.values())
    stats.save(tmp_path / "s.npz")
    back = CalibrationStats.load(tmp_path / "s.npz")
    assert back.sensitivity == stats.sensitivity and back.output_error == stats.output_error
    assert back.layer_gain == stats.layer_gain


def test_a_cache_of_the_layer_local_format_is_measured_again(measured_model, tmp_path):
    """Format 2 held the layer-local relative error under `sensitivity`; read as nats it would
    mislead the knapsack, so such a file is not read (the pass runs again)."""
    import json

    from studio.core.calibration.stats import CalibrationStats

    stats, _ = measured_model
    path = tmp_path / "old.npz"
    stats.save(path)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop("meta")))
    meta["format"] = 2
    del meta["sensitivity_unit"], meta["output_error"], meta["layer_gain"]
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)
    assert CalibrationStats.load(path) is None
