"""The converter: real tiny models, real MLX, output opened by plain mlx_lm.load."""

from __future__ import annotations

import errno
import json
import shutil

import mlx.core as mx
import numpy as np
import pytest
from factory import ARCHS, reference_weights

from studio.core.convert import chunks, finish, pipeline
from studio.core.convert import CancelToken, ConversionCancelled, Progress, convert
from studio.core.errors import StudioError
from studio.core.model.inventory import read_header
from studio.core.policy.bit_policy import PRESET_NAMES, policy_from_dict
from studio.core.project import Project
from studio.main import main

SMALL_SHARDS = 200_000  # several shards even for the tiny models

KEEP_F32 = policy_from_dict({"name": "keep f32", "rules": [
    {"roles": ["*"], "layers": "all", "action": {"keep": "float32"}},
    {"roles": ["mtp"], "layers": "all", "action": "drop"},
]})


@pytest.fixture(scope="session")
def converted(tiny_model, tmp_path_factory):
    """converted(arch, policy, source_format="bf16") -> (Project, output folder), once per session."""
    cache = {}

    def build(arch, policy, source_format="bf16"):
        key = (arch, policy if isinstance(policy, str) else policy.name, source_format)
        if key not in cache:
            project = Project.open(tiny_model(arch, source_format), policy)
            out = tmp_path_factory.mktemp(f"out-{arch}-{source_format}") / "mlx"
            convert(project, out, max_shard_bytes=SMALL_SHARDS)
            cache[key] = (project, out)
        return cache[key]

    return build


def _data_bytes(folder) -> int:
    total = 0
    for f in folder.glob("model*.safetensors"):
        total += sum(entry.nbytes for entry in read_header(f))
    return total


def _stored(folder) -> dict[str, mx.array]:
    weights = {}
    for f in sorted(folder.glob("model*.safetensors")):
        weights.update(mx.load(str(f)))
    return weights


_SOURCE_LOGITS: dict = {}


def _source_logits(path, ids) -> np.ndarray:
    """The source model's last logits, run by mlx-lm in float32 (MoE runs only in float32 on a CPU)."""
    from mlx.utils import tree_map

    from factory.mlx_load import load_with_mlx_lm

    key = (str(path), tuple(ids.tolist()[0]))
    if key not in _SOURCE_LOGITS:
        model, _ = load_with_mlx_lm(path)
        model.update(tree_map(lambda a: a.astype(mx.float32) if a.dtype == mx.bfloat16 else a, model.parameters()))
        _SOURCE_LOGITS[key] = np.array(model(ids)[0, -4:].astype(mx.float32)).ravel()
    return _SOURCE_LOGITS[key]


@pytest.mark.parametrize("policy", ["config-i", "uniform-4bit"])
@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_loads_and_generates(converted, arch, policy):
    import mlx_lm

    project, out = converted(arch, policy)
    assert _data_bytes(out) == project.estimate.total_bytes
    model, tokenizer = mlx_lm.load(str(out))
    replies = list(mlx_lm.stream_generate(model, tokenizer, "hello", max_tokens=4))
    assert 1 <= replies[-1].generation_tokens <= 4
    # The output computes what the source computes, up to quantization noise: its logits
    # track the source model's (0.92-0.999 here; a wrong transpose, split or expert order gives ~0).
    ids = mx.array([tokenizer.encode("hello world, the quick brown fox")])
    ours = np.array(model(ids)[0, -4:].astype(mx.float32)).ravel()
    theirs = _source_logits(project.inventory.root, ids)
    assert np.isfinite(ours).all() and np.corrcoef(ours, theirs)[0, 1] > 0.85
    config = json.loads((out / "config.json").read_text())
    assert config["quantization"] == config["quantization_config"]
    assert {"group_size", "bits", "mode"} <= set(config["quantization"])
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "README.md",
                 "configi_policy.json"):
        assert (out / name).exists(), name


@pytest.mark.parametrize("arch", ARCHS)
def test_written_bytes_equal_the_estimate_for_every_preset(tiny_model, tmp_path, arch):
    project = Project.open(tiny_model(arch), "config-i")
    for name in PRESET_NAMES:
        project.set_policy(Project.open(tiny_model(arch), name).policy)
        out = tmp_path / name
        result = convert(project, out, max_shard_bytes=SMALL_SHARDS)
        assert result.bytes_written == project.estimate.total_bytes
        assert _data_bytes(out) == project.estimate.total_bytes, name
        shards = sorted(out.glob("model*.safetensors"))
        index = json.loads((out / "model.safetensors.index.json").read_text()) if len(shards) > 1 else None
        if index:
            assert set(index["weight_map"].values()) == {s.name for s in shards}
            assert index["metadata"]["total_size"] == project.estimate.total_bytes


def _expected(project, reference) -> dict[str, np.ndarray]:
    """Each kept unit's output, computed from the reference with numpy, independently of the converter."""
    out = {}
    for unit, decision in project.plan.rows():
        if decision.action == "drop":
            continue
        src = [reference[n] for n in unit.sources]
        x = src[0]
        if unit.transform == "stack":
            x = np.stack(src)
        elif unit.transform == "transpose":
            x = np.swapaxes(x, -1, -2)
        elif unit.transform in ("split_gate", "split_up"):
            x = x[..., 0::2] if unit.transform == "split_gate" else x[..., 1::2]
            x = np.swapaxes(x, -1, -2) if x.ndim == 3 else x
        elif unit.transform.startswith("kv_b"):
            heads = project.inventory.text_config["num_attention_heads"]
            nope = project.inventory.text_config["qk_nope_head_dim"]
            v = x.reshape(heads, -1, x.shape[-1])
            x = np.swapaxes(v[:, :nope], -1, -2) if unit.transform == "kv_b_embed_q" else v[:, nope:]
        out[unit.weight_name] = x
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_kept_values_equal_the_source_after_every_transform(converted, arch):
    project, out = converted(arch, KEEP_F32)
    expected = _expected(project, reference_weights(project.inventory.root))
    stored = _stored(out)
    assert set(stored) == set(expected)
    for name, values in expected.items():
        np.testing.assert_array_equal(np.array(stored[name]), values.astype(np.float32), err_msg=name)


@pytest.mark.parametrize("arch,source_format", [("minimax_m3_vl", "mxfp8"), ("deepseek_v3", "fp8")])
def test_fp8_sources_match_the_reference_within_quantization_error(converted, arch, source_format):
    import mlx_lm

    project, out = converted(arch, "uniform-4bit", source_format)
    expected = _expected(project, reference_weights(project.inventory.root))
    stored = _stored(out)
    checked = 0
    for unit, decision in project.plan.rows():
        if decision.action != "quantize":
            continue
        w, scales, biases = (stored[f"{unit.path}.{k}"] for k in ("weight", "scales", "biases"))
        got = np.array(mx.dequantize(w, scales, biases, group_size=decision.group_size,
                                     bits=decision.bits).astype(mx.float32))
        want = expected[unit.weight_name]
        step = np.repeat(np.abs(np.array(scales.astype(mx.float32))), decision.group_size, axis=-1)
        # MLX's affine grid puts the group's edge value exactly on a level, so an
        # error stays within one step (plus the bf16 rounding of value and scale).
        bound = step + 2**-7 * np.abs(want) + 2**-7 * step * (2**decision.bits) + 1e-6
        assert np.all(np.abs(got - want) <= bound), unit.path
        # And the bytes are exactly mx.quantize of the reference values in the model's dtype.
        ref_q = mx.quantize(mx.array(want).astype(mx.bfloat16), decision.group_size, decision.bits)
        for mine, theirs in zip((w, scales, biases), ref_q):
            assert mx.array_equal(mine, theirs).item(), unit.path
        checked += 1
    assert checked > 5
    model, tokenizer = mlx_lm.load(str(out))
    assert mlx_lm.generate(model, tokenizer, "hi", max_tokens=2, verbose=False) is not None


def test_m3_config_keeps_router_and_vision_and_says_so(converted):
    project, out = converted("minimax_m3_vl", "config-i")
    config = json.loads((out / "config.json").read_text())
    q = config["quantization"]
    assert q["language_model.model.layers.1.block_sparse_moe.gate"] is False
    assert q["language_model.model.layers.1.self_attn.index_q_proj"] is False
    assert "quantization_config" not in config["text_config"]
    stored = _stored(out)
    assert stored["language_model.model.layers.1.block_sparse_moe.gate.weight"].dtype == mx.float16
    assert stored["language_model.model.layers.1.block_sparse_moe.e_score_correction_bias"].dtype == mx.float32
    vision = [v for k, v in stored.items() if k.startswith("vision_tower.")]
    assert vision and all(v.dtype == mx.bfloat16 for v in vision)
    card = (out / "README.md").read_text()
    assert "Not evaluated." in card and "quantized weights" in card and "whole output" in card
    policy = json.loads((out / "configi_policy.json").read_text())
    assert policy_from_dict(policy) == project.policy


def test_an_mlx_source_is_requantized(converted, tmp_path):
    import mlx_lm

    _, q4 = converted("qwen3_moe", "uniform-4bit")
    project = Project.open(q4, "config-i")
    assert project.inventory.source_format == "mlx"
    out = tmp_path / "again"
    convert(project, out)
    assert _data_bytes(out) == project.estimate.total_bytes
    model, tokenizer = mlx_lm.load(str(out))
    assert mlx_lm.generate(model, tokenizer, "hi", max_tokens=2, verbose=False) is not None


# --------------------------------------------------------------------------- safety and resume


def _interrupt_after(units: int, exc: BaseException | None = None, token: CancelToken | None = None):
    events: list[Progress] = []

    def callback(p: Progress):
        events.append(p)
        if p.units_done >= units:
            if token is not None:
                token.cancel()
            elif exc is not None:
                raise exc

    return callback, events


def _shard_bytes(folder) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(folder.glob("model*.safetensors"))}


# A cancel through the token, and Ctrl-C (KeyboardInterrupt) mid-write; a real SIGKILL is
# tests/test_convert_kill.py.
@pytest.mark.parametrize("how", ["cancel", "ctrl_c"])
def test_an_interrupted_conversion_leaves_nothing_finished_and_resumes(converted, tiny_model, tmp_path, how):
    _, reference_out = converted("minimax_m3_vl", "config-i")
    project = Project.open(tiny_model("minimax_m3_vl"), "config-i")
    out = tmp_path / "m3"
    partial = tmp_path / ".m3.partial"
    token = CancelToken()
    if how == "cancel":
        callback, _ = _interrupt_after(40, token=token)
        with pytest.raises(ConversionCancelled):
            convert(project, out, progress=callback, cancel=token, max_shard_bytes=SMALL_SHARDS)
    else:
        callback, _ = _interrupt_after(40, exc=KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            convert(project, out, progress=callback, max_shard_bytes=SMALL_SHARDS)
    assert not out.exists()
    assert partial.is_dir() and not (partial / "config.json").exists()
    assert (partial / "CONVERSION_INCOMPLETE.txt").exists()
    events = []
    result = convert(project, out, progress=events.append, max_shard_bytes=SMALL_SHARDS)
    assert result.resumed_shards > 0
    assert not partial.exists()
    assert _shard_bytes(out) == _shard_bytes(reference_out)
    assert events[-1].bytes_done == events[-1].bytes_total == project.estimate.total_bytes
    assert events[-1].phase == "finishing"
    assert not (out / "CONVERSION_INCOMPLETE.txt").exists()


def test_a_different_policy_discards_the_old_partial_shards(tiny_model, tmp_path):
    out = tmp_path / "m"
    callback, _ = _interrupt_after(20, exc=RuntimeError("killed"))
    with pytest.raises(RuntimeError):
        convert(Project.open(tiny_model("mixtral"), "config-i"), out, progress=callback, max_shard_bytes=SMALL_SHARDS)
    result = convert(Project.open(tiny_model("mixtral"), "uniform-4bit"), out, max_shard_bytes=SMALL_SHARDS)
    assert result.resumed_shards == 0
    assert _data_bytes(out) == Project.open(tiny_model("mixtral"), "uniform-4bit").estimate.total_bytes


def test_progress_is_throttled_and_names_units(tiny_model, tmp_path):
    project = Project.open(tiny_model("qwen3_moe"), "config-i")
    events: list[Progress] = []
    convert(project, tmp_path / "o", progress=events.append, max_shard_bytes=SMALL_SHARDS)
    assert events[0].phase == "checking" and events[-1].phase == "finishing"
    writing = [e for e in events if e.phase == "writing"]
    assert writing and all(e.unit for e in writing)
    assert len(events) <= len(project.units) + 10
    done = [e.bytes_done for e in events]
    assert done == sorted(done)


def test_an_existing_output_needs_force(converted, tiny_model, tmp_path, capsys):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    project = Project.open(tiny_model("llama"), "uniform-4bit")
    with pytest.raises(StudioError, match="already exists"):
        convert(project, out)
    assert (out / "keep.txt").read_text() == "mine"
    assert main(["convert", str(tiny_model("llama")), str(out), "--policy", "uniform-4bit"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["convert", str(tiny_model("llama")), str(out), "--policy", "uniform-4bit", "--force"]) == 0
    captured = capsys.readouterr()
    assert "%" in captured.err and "MB/s" in captured.err and "wrote" in captured.out
    assert not (out / "keep.txt").exists() and (out / "config.json").exists()
    assert not list(tmp_path.glob(".exists.*"))


def test_output_inside_the_source_is_refused(tiny_model):
    src = tiny_model("llama")
    with pytest.raises(StudioError, match="source model"):
        convert(Project.open(src, "config-i"), src / "mlx")


def test_too_little_disk_space_fails_before_writing(tiny_model, tmp_path, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(finish.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=1000))
    out = tmp_path / "o"
    with pytest.raises(StudioError, match="not enough free disk space"):
        convert(Project.open(tiny_model("llama"), "config-i"), out)
    assert not out.exists()
    assert not list((tmp_path / ".o.partial").glob("model*"))


def test_a_full_disk_mid_write_fails_clearly_and_stays_partial(tiny_model, tmp_path, monkeypatch):
    real = pipeline.write_all
    calls = {"n": 0}

    def flaky(f, offset, data):
        calls["n"] += 1
        if calls["n"] > 30:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(f, offset, data)

    monkeypatch.setattr(pipeline, "write_all", flaky)
    out = tmp_path / "o"
    project = Project.open(tiny_model("qwen3_moe"), "config-i")
    with pytest.raises(StudioError, match="full"):
        convert(project, out, max_shard_bytes=SMALL_SHARDS)
    assert not out.exists()
    assert not (tmp_path / ".o.partial" / "config.json").exists()
    monkeypatch.setattr(pipeline, "write_all", real)
    assert convert(project, out, max_shard_bytes=SMALL_SHARDS).resumed_shards > 0


def test_a_truncated_source_shard_fails_clearly(tiny_model, tmp_path):
    src = shutil.copytree(tiny_model("mixtral"), tmp_path / "src")
    project = Project.open(src, "config-i")
    shard = src / project.inventory.shards[-1]
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size - 100)
    out = tmp_path / "o"
    with pytest.raises(StudioError, match="truncated"):
        convert(project, out)
    assert not out.exists()
    with pytest.raises(StudioError, match="truncated"):
        Project.open(src, "config-i")


@pytest.mark.parametrize("arch,source_format", [("deepseek_v3", "fp8"), ("minimax_m3_vl", "mxfp8"),
                                                ("gpt_oss", "bf16")])
def test_chunked_conversion_writes_the_same_bytes(converted, tiny_model, tmp_path, monkeypatch, arch, source_format):
    """Small chunks (rows of 2-D units, experts of stacked ones) give exactly the unchunked bytes."""
    _, whole = converted(arch, "uniform-4bit", source_format)
    monkeypatch.setattr(chunks, "CHUNK_ELEMENTS", 3000)
    out = tmp_path / "chunked"
    convert(Project.open(tiny_model(arch, source_format), "uniform-4bit"), out, max_shard_bytes=SMALL_SHARDS)
    assert _shard_bytes(out) == _shard_bytes(whole)


@pytest.mark.parametrize("arch", ["qwen3", "deepseek_v3", "minimax_m3_vl"])
def test_bpw_output_against_mlx_lm_compute_bits_per_weight(converted, arch):
    import mlx_lm
    from mlx_lm.utils import compute_bits_per_weight

    project, out = converted(arch, "uniform-4bit")
    model, _ = mlx_lm.load(str(out))
    theirs = compute_bits_per_weight(model)
    est = project.estimate
    # Over the units mlx-lm's loader keeps (it drops a VL checkpoint's vision tower), the figures agree.
    loaded = [i for i, (u, d) in enumerate(project.plan.rows()) if d.action != "drop" and u.role != "vision"]
    ours_loaded = 8 * sum(est.unit_bytes[i] for i in loaded) / sum(project.units[i].elements for i in loaded)
    assert ours_loaded == pytest.approx(theirs, rel=5e-4)
    if arch == "minimax_m3_vl":  # the output keeps the vision tower in bf16; mlx-lm's model has none
        assert est.bpw_output > 1.2 * theirs
    else:
        assert est.bpw_output == pytest.approx(theirs, rel=5e-4)
