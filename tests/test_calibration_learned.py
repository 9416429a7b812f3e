"""Block-wise learned quantization (`--calibrate-method learned`): streamed, stock layout, cancellable."""

import json

import pytest

from studio.core.calibration.learned_layer import LearnSettings

TOKENS = dict(sequences=4, length=32)
# Measured on the tokens it trains on (holdout 0): these tests check the optimiser and the plumbing;
# whether it generalises to held-out text is bench/bench_calibration_methods.py's question.
QUICK = LearnSettings(steps=24, batch=2, holdout=0)


@pytest.fixture(scope="module", params=["llama", "mixtral"])
def learned(request, tiny_model, tmp_path_factory):
    from studio.core.calibration.learned import learn
    from studio.core.project import Project

    source = tiny_model(request.param)
    project = Project.open(source, "config-i")
    cache = tmp_path_factory.mktemp("learned-cache")
    return source, project, learn(project, settings=QUICK, cache_dir=cache, **TOKENS), cache


def test_learning_lowers_every_layers_output_error_below_its_gptq_start(learned):
    _, project, result, _ = learned
    assert len(result.layers) == project.num_layers
    assert all(r.error <= r.start_error for r in result.layers)
    assert sum(r.error for r in result.layers) < 0.97 * sum(r.start_error for r in result.layers)


def test_the_learned_conversion_has_the_plain_layout_and_loads_with_mlx_lm(learned, tmp_path):
    import mlx.core as mx
    import numpy as np
    from mlx_lm.utils import load

    from studio.core.calibration.convert_hook import LearnedQuantizer
    from studio.core.convert import convert
    from studio.core.model.inventory import read_header

    source, project, result, _ = learned
    quantizer = LearnedQuantizer(result)
    plain = convert(project, tmp_path / "plain", measure_errors=False)
    out = convert(project, tmp_path / "learned", measure_errors=False, quantizer=quantizer)
    assert (plain.calibration, out.calibration) == ("", "learned")
    assert out.bytes_written == plain.bytes_written == project.estimate.total_bytes  # estimate == bytes written
    stored = {u.path for u in project.units if u.layer is not None and u.kind == "module"} & quantizer.used
    assert stored and all(path in result.store for path in stored)
    for shard in sorted(p.name for p in (tmp_path / "plain").glob("*.safetensors")):
        a = [(e.name, e.dtype, e.shape, e.start, e.nbytes) for e in read_header(tmp_path / "plain" / shard)]
        b = [(e.name, e.dtype, e.shape, e.start, e.nbytes) for e in read_header(tmp_path / "learned" / shard)]
        assert a == b
    assert "Method: learned" in (tmp_path / "learned" / "README.md").read_text()
    model, _ = load(str(tmp_path / "learned"))
    logits = model(mx.array([[1, 2, 3, 4]])).astype(mx.float32)
    assert np.isfinite(np.asarray(logits)).all()


def test_a_second_pass_is_read_from_the_cache(learned, monkeypatch):
    from studio.core.calibration import learned as module

    _, project, result, cache = learned
    monkeypatch.setattr(module, "run_learned_pass", lambda *a, **k: pytest.fail("the cached pass was run again"))
    again = module.learn(project, settings=QUICK, cache_dir=cache, **TOKENS)
    assert again.key == result.key and again.layers == result.layers


@pytest.mark.parametrize("steps", [1, 2])
def test_a_pass_of_one_or_two_steps_a_layer_runs(tiny_model, tmp_path, steps):
    """Fewer steps than the warm-up plus one decay step (the M3 bench's `--steps 1`) once crashed in
    MLX's cosine schedule, after the layer's whole start had been computed."""
    from studio.core.calibration.learned import learn
    from studio.core.project import Project

    project = Project.open(tiny_model("llama"), "config-i")
    result = learn(project, settings=LearnSettings(steps=steps, batch=2, holdout=1), cache_dir=tmp_path, **TOKENS)
    assert [r.steps for r in result.layers] == [steps] * project.num_layers
    assert all(r.error <= r.start_error for r in result.layers)


def test_cancel_stops_in_the_middle_of_a_layer_and_leaves_nothing(tiny_model, tmp_path):
    from studio.core.calibration.calibrate import CalibrationCancelled
    from studio.core.calibration.learned import learn
    from studio.core.cancel import CancelToken
    from studio.core.project import Project

    project = Project.open(tiny_model("llama"), "config-i")
    token = CancelToken()
    labels = []

    def progress(p):
        labels.append(p.label)
        if p.label == "layer 0: step 3/24":
            token.cancel()

    with pytest.raises(CalibrationCancelled):
        learn(project, settings=QUICK, cache_dir=tmp_path, progress=progress, cancel=token, **TOKENS)
    assert labels[-1] == "layer 0: step 3/24"  # stopped at the next step, inside layer 0
    assert not list(tmp_path.iterdir())


def test_a_bad_method_is_refused_in_one_sentence_before_any_work(tiny_model, tmp_path, capsys):
    from studio.main import main

    out = tmp_path / "out"
    assert main(["convert", str(tiny_model("llama")), str(out), "--calibrate", "--calibrate-method", "autoround"]) != 0
    err = capsys.readouterr().err.strip()
    assert err == "configi-studio: error: unknown calibration method 'autoround': use gptq or learned."
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.fixture
def quick_command_line(tmp_path, monkeypatch):
    """`convert --calibrate-method learned` on 4 x 32 tokens and QUICK settings, caching under tmp_path."""
    from studio.core.calibration import corpus, learned

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(corpus, "DEFAULT_SEQUENCES", 4)
    monkeypatch.setattr(corpus, "DEFAULT_LENGTH", 32)
    monkeypatch.setattr(learned, "DEFAULT_SETTINGS", QUICK)


def test_learned_conversion_from_the_command_line(tiny_model, tmp_path, capsys, quick_command_line):
    from studio.core.calibration import corpus
    from studio.main import main

    out = tmp_path / "out"
    assert main(["convert", str(tiny_model("mixtral")), str(out), "--calibrate-method", "learned"]) == 0
    captured = capsys.readouterr()
    assert "learned calibration: 2 layers" in captured.err and "calibrated (learned)" in captured.out
    assert "Method: learned" in (out / "README.md").read_text()
    manifests = list((tmp_path / "cache").rglob("manifest.json"))
    assert manifests
    # The learned method reads twice the gptq pass's text by default: with fewer tokens its roundings
    # fit the calibration text (see corpus.LEARNED_TEXT_FACTOR).
    assert json.loads(manifests[0].read_text())["meta"]["tokens"] == corpus.LEARNED_TEXT_FACTOR * 4 * 32
    assert json.loads((out / "config.json").read_text())["quantization"]


def test_units_in_a_mode_without_biases_pass_through_the_learned_method_with_their_own_scales(
        tiny_model, tmp_path, quick_command_line):
    """mxfp4 has no biases, so there is nothing to learn: such units keep their start and their uint8
    scales (the stand-ins once held every scale in float32, and MLX refused them: a traceback)."""
    import mlx.core as mx
    from mlx_lm.utils import load
    from safetensors import safe_open

    from studio.main import main

    policy = {"format": "configi-studio.policy", "version": 1, "name": "mxfp4 attention and down", "rules": [
        {"roles": ["*"], "layers": "all", "action": {"keep": "source"}},
        {"roles": ["layer_matrices"], "layers": "all", "action": {"quantize": {"bits": 4, "group_size": 64}}},
        {"roles": ["attention", "expert_down"], "layers": "all",
         "action": {"quantize": {"bits": 4, "group_size": 32, "mode": "mxfp4"}}}]}
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    out = tmp_path / "out"
    assert main(["convert", str(tiny_model("mixtral")), str(out), "--policy", str(tmp_path / "policy.json"),
                 "--calibrate-method", "learned"]) == 0
    dtypes = {}
    for shard in out.glob("*.safetensors"):
        with safe_open(shard, "numpy") as f:
            dtypes |= {k: f.get_slice(k).get_dtype() for k in f.keys() if k.endswith(".scales")}
    assert dtypes["model.layers.0.self_attn.q_proj.scales"] == "U8"
    assert dtypes["model.layers.1.block_sparse_moe.switch_mlp.down_proj.scales"] == "U8"
    assert dtypes["model.layers.1.block_sparse_moe.switch_mlp.up_proj.scales"] == "BF16"
    model, _ = load(str(out))
    logits = model(mx.array([[1, 2, 3]]))
    assert bool(mx.all(mx.isfinite(logits.astype(mx.float32))).item())


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_the_hand_written_rounding_gradient_equals_autograds_straight_through_one(bits, monkeypatch):
    """The stand-in's gradient (written by hand, in blocks of rows) is the straight-through estimator's:
    the rounding passes the gradient, the clip to [0, 2^bits) passes it where the rounded value is inside."""
    import mlx.core as mx

    from studio.core.calibration import learned_layer
    from studio.core.calibration.learned_layer import QuantSwitch

    monkeypatch.setattr(learned_layer, "ROUNDING_BLOCK_VALUES", 3 * 128)  # the weight made in several blocks
    module, params = _learning_its_rounding(QuantSwitch, (3, 16, 128), bits)
    x, indices = mx.random.normal((24, 1, 1, 128)), mx.array([[0], [2], [1]] * 8)
    target = mx.random.normal((24, 1, 1, 16))

    def loss(p, x):
        module.set_params(p)
        return mx.sum(mx.square(module(x, indices) - target))

    def reference(p, x):
        w = _straight_through_weight(module, p, bits)
        y = mx.gather_mm(x, w.swapaxes(-1, -2), rhs_indices=indices)
        return mx.sum(mx.square(y - target))

    _assert_same_gradients(loss, reference, params, x)


def _learning_its_rounding(kind, shape, bits):
    """A stand-in of random weights learning its rounding, at a random point of its parameters."""
    import mlx.core as mx

    mx.random.seed(bits)
    w = 0.02 * mx.random.normal(shape)
    module = kind(list(mx.quantize(w, group_size=32, bits=bits)), None, 32, bits, "affine", mx.bfloat16)
    module.learn_rounding(w)
    params = module.zero_params()
    params["v"] = mx.random.uniform(-0.5, 0.5, params["v"].shape)
    params["a"] = 0.02 * mx.random.normal(params["a"].shape)
    params["c"] = 0.02 * mx.random.normal(params["c"].shape)
    return module, params


def _straight_through_weight(module, p, bits):
    """The rounding's straight-through estimator as autograd sees it."""
    import mlx.core as mx

    module.set_params(p)
    flat = module.levels0.astype(mx.float32) + module.frac.astype(mx.float32) + p["v"]
    levels = mx.stop_gradient(mx.clip(mx.round(flat), 0, 2**bits - 1))
    inside = mx.stop_gradient((levels == mx.round(flat)).astype(mx.float32))
    levels = levels + inside * (flat - mx.stop_gradient(flat))  # value unchanged, gradient 1 inside
    scales, biases = module.rounded_scales_biases(p["a"], p["c"])
    grouped = levels.reshape(*scales.shape, -1) * scales[..., None] + biases[..., None]
    return grouped.reshape(levels.shape)


def _assert_same_gradients(loss, reference, params, x):
    import mlx.core as mx
    import numpy as np

    got = mx.grad(loss, argnums=(0, 1))(params, x)
    want = mx.grad(reference, argnums=(0, 1))(params, x)
    assert mx.allclose(loss(params, x), reference(params, x)).item()
    for name in ("v", "a", "c"):
        np.testing.assert_allclose(np.array(got[0][name]), np.array(want[0][name]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.array(got[1]), np.array(want[1]), rtol=1e-4, atol=1e-5)
    assert np.count_nonzero(np.array(got[0]["v"])) > 0.5 * got[0]["v"].size


@pytest.mark.parametrize("bits", [2, 4])
def test_a_linears_rounding_gradient_formed_a_block_of_rows_at_a_time_equals_autograds(bits, monkeypatch):
    import mlx.core as mx

    from studio.core.calibration import learned_layer
    from studio.core.calibration.learned_layer import QuantLinear

    monkeypatch.setattr(learned_layer, "ROUNDING_BLOCK_VALUES", 5 * 128)  # several blocks, the last one short
    module, params = _learning_its_rounding(QuantLinear, (24, 128), bits)
    x, target = mx.random.normal((2, 6, 128)), mx.random.normal((2, 6, 24))

    def loss(p, x):
        module.set_params(p)
        return mx.sum(mx.square(module(x) - target))

    def reference(p, x):
        return mx.sum(mx.square(x @ _straight_through_weight(module, p, bits).T - target))

    _assert_same_gradients(loss, reference, params, x)


@pytest.mark.parametrize("rounding", [True, False])
def test_a_kept_point_taken_back_writes_and_computes_exactly_what_it_was_kept_at(rounding):
    """The best point is kept as it would be written (uint8 integers, scales and biases in the output
    dtype), not as float32 parameters: taking it back must write the same tensors, and the unit must
    then compute with them, so the layer written is the one measured."""
    import mlx.core as mx

    from studio.core.calibration.learned_layer import QuantLinear

    mx.random.seed(3)
    w = 0.02 * mx.random.normal((16, 128))
    module = QuantLinear(list(mx.quantize(w, group_size=32, bits=2)), None, 32, 2, "affine", mx.bfloat16)
    if rounding:
        module.learn_rounding(w)
    params = module.zero_params()
    if rounding:
        params["v"] = mx.random.uniform(-0.5, 0.5, params["v"].shape)
    params["a"] = 0.02 * mx.random.normal(params["a"].shape)
    params["c"] = 0.02 * mx.random.normal(params["c"].shape)
    module.set_params(params)
    written = module.stored()
    kept = module.kept(params)
    assert kept["scales"].dtype == mx.bfloat16 and "a" not in kept
    assert "v" not in kept and (kept["levels"].dtype == mx.uint8 if rounding else "levels" not in kept)
    module.set_params(module.zero_params())
    assert not all(mx.array_equal(a, b).item() for a, b in zip(module.stored(), written))
    module.take(kept)
    assert all(mx.array_equal(a, b).item() for a, b in zip(module.stored(), written))
    x = mx.random.normal((3, 128))
    packed, scales, biases = written  # dequantized in float32, as the stand-in computes
    expected = x @ mx.dequantize(packed, scales.astype(mx.float32), biases.astype(mx.float32), group_size=32, bits=2).T
    assert mx.allclose(module(x), expected, rtol=1e-4, atol=1e-5).item()


@pytest.mark.parametrize("method", ["gptq", "learned"])
def test_an_output_folder_that_would_be_refused_stops_the_run_before_the_calibration_pass(
        tiny_model, tmp_path, monkeypatch, capsys, method):
    """The pass takes hours on a big MoE: a destination the conversion would refuse fails first."""
    from studio.main import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert main(["convert", str(tiny_model("llama")), str(out), "--calibrate-method", method]) != 0
    err = capsys.readouterr().err
    assert "already exists; choose another folder or replace it with --force." in err
    assert "calibrat" not in err.split("\n", 1)[1]  # no pass, no expected time for one
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_the_windows_calibrated_conversion_checks_its_destination_before_the_pass(tiny_model, tmp_path, monkeypatch):
    from studio.core.calibration.methods import calibrate_and_convert
    from studio.core.errors import StudioError
    from studio.core.project import Project

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    source = tiny_model("llama")
    project = Project.open(source, "config-i")
    with pytest.raises(StudioError, match="must not be the source model's folder"):
        calibrate_and_convert(project, source / "out", method="learned")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


@pytest.mark.parametrize("method", ["gptq", "learned"])
def test_a_short_calibration_text_is_used_with_a_warning(tiny_model, tmp_path, monkeypatch, capsys, method):
    from studio.core.calibration import learned
    from studio.main import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(learned, "DEFAULT_SETTINGS", QUICK)
    text = tmp_path / "short.txt"
    text.write_text("The capital of France is Paris.")
    out = tmp_path / "out"
    assert main(["convert", str(tiny_model("llama")), str(out), "--calibrate", str(text), "--calibrate-method",
                 method, "--no-errors"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {text} gave only " in err and "tokens to calibrate on" in err
    if method == "learned":  # one sequence: nothing was held out, and the summary says so
        assert "on the tokens it trained on (too few to hold any out)" in err and "held-out" not in err
    assert (out / "config.json").exists()


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_packed_experts_scale_and_bias_gradients_equal_mlxs_own_formed_an_expert_at_a_time(bits):
    """Wide experts learn their scales and biases on packed values; the stand-in forms their gradient an
    expert at a time (MLX's forms every expert's float32 weight gradient at once). Same gradients, for
    the input too, and an expert no token reached gets none."""
    import mlx.core as mx
    import numpy as np

    from studio.core.calibration.learned_layer import QuantSwitch

    mx.random.seed(bits)
    w = 0.02 * mx.random.normal((5, 16, 128))
    module = QuantSwitch(list(mx.quantize(w, group_size=32, bits=bits)), None, 32, bits, "affine", mx.bfloat16)
    assert not module.rounds
    x = mx.random.normal((12, 1, 1, 128))
    indices = mx.array(np.random.default_rng(bits).integers(0, 4, (12, 2)))  # expert 4 gets no token
    target = mx.random.normal((12, 2, 1, 16))
    params = module.zero_params()
    params["a"] = 0.02 * mx.random.normal(params["a"].shape)
    params["c"] = 0.02 * mx.random.normal(params["c"].shape)

    def loss(p, x):
        module.set_params(p)
        return mx.sum(mx.square(module(x, indices) - target))

    def reference(p, x):
        scales, biases = module.rounded_scales_biases(p["a"], p["c"])
        y = mx.gather_qmm(x, module.weight, scales, biases, rhs_indices=indices, transpose=True,
                          group_size=32, bits=bits)
        return mx.sum(mx.square(y - target))

    got = mx.grad(loss, argnums=(0, 1))(params, x)
    want = mx.grad(reference, argnums=(0, 1))(params, x)
    for name in ("a", "c"):
        np.testing.assert_allclose(np.array(got[0][name]), np.array(want[0][name]), rtol=1e-4, atol=1e-5)
        assert not np.array(got[0][name])[4].any() and np.array(got[0][name])[:4].any()
    np.testing.assert_allclose(np.array(got[1]), np.array(want[1]), rtol=1e-4, atol=1e-5)


def test_a_packed_linears_scale_and_bias_gradients_equal_mlxs_own_formed_a_block_of_rows_at_a_time(monkeypatch):
    import mlx.core as mx
    import numpy as np

    from studio.core.calibration import learned_layer
    from studio.core.calibration.learned_layer import QuantLinear

    monkeypatch.setattr(learned_layer, "ROUNDING_BLOCK_VALUES", 5 * 128)  # several blocks, the last one short
    mx.random.seed(7)
    w = 0.02 * mx.random.normal((24, 128))
    module = QuantLinear(list(mx.quantize(w, group_size=32, bits=3)), None, 32, 3, "affine", mx.bfloat16)
    x, target = mx.random.normal((2, 6, 128)), mx.random.normal((2, 6, 24))
    params = module.zero_params()
    params["a"] = 0.02 * mx.random.normal(params["a"].shape)

    def loss(p, x):
        module.set_params(p)
        return mx.sum(mx.square(module(x) - target))

    def reference(p, x):
        scales, biases = module.rounded_scales_biases(p["a"], p["c"])
        y = mx.quantized_matmul(x, module.weight, scales, biases, transpose=True, group_size=32, bits=3)
        return mx.sum(mx.square(y - target))

    got = mx.grad(loss, argnums=(0, 1))(params, x)
    want = mx.grad(reference, argnums=(0, 1))(params, x)
    for name in ("a", "c"):
        np.testing.assert_allclose(np.array(got[0][name]), np.array(want[0][name]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.array(got[1]), np.array(want[1]), rtol=1e-4, atol=1e-5)


def test_a_calibrated_conversion_that_cannot_fit_on_the_disk_says_so_before_the_pass(tiny_model, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from studio.core.calibration.methods import calibrate_and_convert
    from studio.core.errors import StudioError
    from studio.core.project import Project

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    project = Project.open(tiny_model("llama"), "config-i")
    with pytest.raises(StudioError, match="not enough free disk space"):
        calibrate_and_convert(project, tmp_path / "new" / "out", method="gptq")
    assert not (tmp_path / "new").exists()
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_the_calibration_passs_reader_holds_big_rows_in_mappings_of_their_own(tiny_model, monkeypatch):
    """A layer's expert rows are freed a projection at a time; from glibc's heap they stayed resident."""
    import mmap

    import numpy as np

    from studio.core.calibration.layers import Skeleton
    from studio.core.model import dequantize
    from studio.core.project import Project

    monkeypatch.setattr(dequantize, "OWN_MAPPING_BYTES", 1024)  # the tiny model's tensors are small
    project = Project.open(tiny_model("mixtral"), "config-i")
    tensor = max(project.inventory.tensors, key=lambda t: t.data.nbytes)

    def backing(array):
        while isinstance(array, np.ndarray):
            array = array.base
        return array.obj if isinstance(array, memoryview) else array

    skeleton = Skeleton(project)
    try:
        held = skeleton.reader.read(tensor.data)
        assert isinstance(backing(held), mmap.mmap)
    finally:
        skeleton.reader.close()
    streaming = project.inventory.source.reader()
    assert not isinstance(backing(streaming.read(tensor.data)), mmap.mmap)
    np.testing.assert_array_equal(held, streaming.read(tensor.data))
    streaming.close()
