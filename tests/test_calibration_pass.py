"""The streamed calibration pass computes what the model computes: layer by layer, masks and all,
from the checkpoint's own values only."""

import json

import mlx.core as mx
import numpy as np
import pytest

from factory import load_with_mlx_lm, make_tiny_model, st
from studio.core.errors import StudioError

WINDOW = 8  # gpt-oss's sliding window, shrunk below the sequence length so that it matters


def _source(arch, folder):
    path = make_tiny_model(arch, folder)
    if arch == "gpt_oss":
        config = json.loads((path / "config.json").read_text())
        assert config["layer_types"][:2] == ["sliding_attention", "full_attention"]
        config["sliding_window"] = WINDOW
        (path / "config.json").write_text(json.dumps(config))
    return path


def _reference_hidden_states(path, tokens):
    """Each decoder layer's output from mlx-lm's own forward pass of the whole model (float32)."""
    model, _ = load_with_mlx_lm(path)
    model.set_dtype(mx.float32)  # the pass computes in float32 (and MLX runs MoE only in float32 on a CPU)
    text = model.language_model.model if hasattr(model, "language_model") else model.model
    outputs = []

    class Keep:
        def __init__(self, layer):
            self.layer = layer

        def __getattr__(self, name):
            return getattr(self.layer, name)

        def __call__(self, *args, **kwargs):
            y = self.layer(*args, **kwargs)
            outputs.append(y)
            return y

    text.layers = [Keep(layer) for layer in text.layers]
    mx.eval(model(tokens))
    return outputs


@pytest.mark.parametrize("arch", ["gpt_oss", "qwen3_moe", "llama", "deepseek_v3"])
def test_the_streamed_pass_equals_the_models_own_forward_pass(arch, tmp_path):
    """gpt_oss: sliding-window layers between full ones; qwen3_moe: routed experts; llama: dense;
    deepseek_v3: a mask that must be an array. Before the pass took its masks from the model's own
    __call__, gpt_oss's sliding layers saw the whole causal past and deepseek_v3 failed outright."""
    from studio.core.calibration.calibrate import run_pass
    from studio.core.calibration.corpus import load_corpus
    from studio.core.project import Project

    path = _source(arch, tmp_path / arch)
    corpus = load_corpus(path, None, 2, 4 * WINDOW)
    streamed = {}
    run_pass(Project.open(path, "config-i"), corpus, sensitivity=False,
             on_layer=lambda i, h: streamed.__setitem__(i, np.asarray(h)))
    reference = _reference_hidden_states(path, mx.array(corpus.tokens))
    assert len(streamed) == len(reference) >= 2
    for i, ref in enumerate(reference):
        ref = np.asarray(ref)
        error = np.linalg.norm(streamed[i] - ref) / np.linalg.norm(ref)
        assert error < 1e-5, (arch, i, error)


def _drop(path, suffix):
    """Rewrite the checkpoint at `path` without the tensors whose names end in `suffix`."""
    tensors = {}
    for f in sorted(path.glob("model*.safetensors")):
        tensors.update(st.read_file(f))
        f.unlink()
    kept = {k: v for k, v in tensors.items() if not k.endswith(suffix)}
    assert len(kept) < len(tensors)
    (path / "model.safetensors.index.json").unlink(missing_ok=True)
    st.write_sharded(path, {k: st.float_tensor(v, d) for k, (d, v) in kept.items()}, 1)


# Missing from every layer, so that the inventory's check (a layer lacking what its neighbours
# have) cannot catch it first: only the model class knows the parameter is needed.
@pytest.mark.parametrize("arch,suffix,named", [
    ("qwen3", "post_attention_layernorm.weight", "model.layers.0.post_attention_layernorm.weight"),
    ("qwen3", "self_attn.q_norm.weight", "model.layers.0.self_attn.q_norm.weight"),
    ("qwen3", "model.norm.weight", "model.norm.weight"),
    ("llama", "lm_head.weight", "lm_head.weight")])
def test_a_parameter_the_checkpoint_lacks_stops_the_pass_with_one_sentence(arch, suffix, named, tmp_path):
    """Before, the model class's random initial value (or the tied embedding, for the head) stood
    in for it, silently."""
    from studio.core.calibration.calibrate import run_pass
    from studio.core.calibration.corpus import load_corpus
    from studio.core.project import Project

    path = make_tiny_model(arch, tmp_path / arch)
    _drop(path, suffix)
    corpus = load_corpus(path, None, 2, 16)
    project = Project.open(path, "config-i")
    with pytest.raises(StudioError) as err:
        run_pass(project, corpus, sensitivity=False)
    message = str(err.value)
    assert named in message and "\n" not in message and message.count(". ") == 0


def test_studio_picks_the_model_class_mlx_lm_loads(tiny_model):
    """mlx-lm's class lookup is private; the studio's own must agree with its public load_model."""
    from mlx_lm.utils import load_model

    from factory import ARCHS
    from studio.core.mlx_classes import model_classes

    for arch in ARCHS:
        path = tiny_model(arch)
        loaded, config = load_model(path, lazy=True, strict=False)
        assert model_classes(config)[0] is type(loaded), arch
    assert model_classes({"model_type": "minimax_m2"})[0].__module__ == "mlx_lm.models.minimax"
    with pytest.raises(ValueError):
        model_classes({"model_type": "no_such_model"})


def test_a_per_sequence_argument_follows_the_sequences_a_call_holds():
    """A layer argument with one entry per calibration sequence (a padding mask) is cut to the
    sequences of each call, given as the first one's index or as indices (the perturbed copies the
    sensitivity pass carries repeat the first sequences); a shared [L, L] mask passes as it is."""
    from studio.core.calibration.layers import LayerCall

    per_sequence = mx.arange(4 * 2 * 3 * 3).reshape(4, 2, 3, 3)
    shared = mx.ones((3, 3))
    x = mx.zeros((2, 3, 8))

    def seen(rows):
        return LayerCall((per_sequence, shared), {}, 4)(lambda h, a, b: (a, b), x, rows)

    a, b = seen(2)
    assert np.array_equal(np.asarray(a), np.asarray(per_sequence[2:4])) and b is shared
    a, _ = seen(np.array([1, 1]))
    assert np.array_equal(np.asarray(a), np.asarray(per_sequence[mx.array([1, 1])]))
