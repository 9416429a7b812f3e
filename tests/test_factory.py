"""The test model factories make what they claim: loadable HF-layout checkpoints,
exact FP8/MXFP8 encodings with a trustworthy reference, and a full-size M3 header."""

import json
import math
import os
import time

import mlx.core as mx
import mlx_lm
import numpy as np
import pytest
from safetensors import safe_open

from factory import (ARCHS, MOE_ARCHS, NEEDS_FILL, load_with_mlx_lm, make_tiny_model,
                     param_count, reference_weights, st)

PROMPT = "the quick brown fox jumps over the lazy dog " * 4  # > one indexer block budget


def _generate(model, tokenizer, n=4):
    return [r.token for r in mlx_lm.stream_generate(model, tokenizer, PROMPT, max_tokens=n)]


# --------------------------------------------------------------------------- tiny models


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_bf16_loads_and_generates(tiny_model, arch):
    path = tiny_model(arch)
    if arch in NEEDS_FILL:
        # mlx-lm 0.32.2 rejects these official layouts; see factory/mlx_load.py.
        model, tokenizer = load_with_mlx_lm(path)
    else:
        model, tokenizer = mlx_lm.load(str(path))
    if arch in MOE_ARCHS:
        model.set_dtype(mx.float32)  # gather_mm runs only in float32 on CPU
    assert len(_generate(model, tokenizer)) >= 1
    # The loaded embedding is the stored one.
    ref = reference_weights(path)
    name = next(k for k in ref if k.endswith("model.embed_tokens.weight"))
    embed = model.language_model.model.embed_tokens if arch == "minimax_m3_vl" \
        else model.model.embed_tokens
    np.testing.assert_array_equal(np.array(embed.weight.astype(mx.float32)), ref[name])


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_layout_is_hugging_face(tiny_model, arch):
    path = tiny_model(arch)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    names = set(index["weight_map"])
    assert len(set(index["weight_map"].values())) == 2
    assert not any("switch_mlp" in n for n in names)
    config = json.loads((path / "config.json").read_text())
    assert config["torch_dtype"] == "bfloat16"
    if arch in MOE_ARCHS and arch != "gpt_oss":
        assert any(".experts.7." in n for n in names)  # unstacked, one tensor per expert
    if arch == "minimax_m3_vl":
        moe = config["text_config"]["moe_layer_freq"]
        for i, is_moe in enumerate(moe):
            has_index = f"language_model.model.layers.{i}.self_attn.index_q_proj.weight" in names
            assert has_index == bool(is_moe)
        assert any(n.startswith("vision_tower.") for n in names)
        header = {}
        for f in path.glob("model-*.safetensors"):
            header.update(st.read_header(f))
        assert header["language_model.model.layers.1.block_sparse_moe.gate.weight"]["dtype"] == "F32"
        assert header["language_model.model.layers.1.block_sparse_moe.e_score_correction_bias"][
            "dtype"] == "F32"
    if arch == "deepseek_v3":
        assert any(n.startswith(f"model.layers.{config['num_hidden_layers']}.eh_proj") for n in names)
    if arch == "gpt_oss":
        assert "model.layers.0.mlp.experts.gate_up_proj" in names
        assert "model.layers.0.self_attn.sinks" in names
    if arch == "qwen3":
        assert "lm_head.weight" not in names  # tied


def test_shards_and_float_formats(tmp_path):
    one = make_tiny_model("llama", tmp_path / "one", source_format="f16", shards=1)
    assert [p.name for p in one.glob("model*")] == ["model.safetensors"]
    three = make_tiny_model("llama", tmp_path / "three", source_format="f32", shards=3)
    index = json.loads((three / "model.safetensors.index.json").read_text())
    files = sorted(p.name for p in three.glob("model-*.safetensors"))
    assert files == [f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)]
    assert index["metadata"]["total_size"] == param_count(three)[2]
    # Same seed, same values: f16 is f32 rounded once.
    r16, r32 = reference_weights(one), reference_weights(three)
    assert r16.keys() == r32.keys()
    for k in r32:
        np.testing.assert_array_equal(r16[k], r32[k].astype(np.float16).astype(np.float32))


# --------------------------------------------------------------------------- FP8 / MXFP8


def test_e4m3_encoder_matches_mlx():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(50_000) * np.exp2(rng.uniform(-14, 10, 50_000))
    finite = st.E4M3_TABLE[np.isfinite(st.E4M3_TABLE)]
    mids = (st.E4M3_TABLE[1:0x7E] + st.E4M3_TABLE[2:0x7F]) / 2  # ties: round to even
    x = np.concatenate([x, finite, mids, -mids, [1e4, -1e4, 0.0]]).astype(np.float32)
    np.testing.assert_array_equal(st.encode_e4m3(x), np.array(mx.to_fp8(mx.array(x))))
    codes = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(
        st.decode_e4m3(codes), np.array(mx.from_fp8(mx.array(codes), dtype=mx.float32)))


def _linear_names(ref_f32, path):
    header = {}
    for f in path.glob("model*.safetensors"):
        header.update(st.read_header(f))
    return [k for k in ref_f32 if header[k]["dtype"] == "F8_E4M3"], header


@pytest.mark.parametrize("arch,fmt", [("minimax", "fp8"), ("deepseek_v3", "fp8"),
                                      ("minimax_m3_vl", "mxfp8")])
def test_quantized_reference_roundtrip(tiny_model, arch, fmt):
    exact = reference_weights(tiny_model(arch, "f32"))  # same seed: the values encoded
    path = tiny_model(arch, fmt)
    ref = reference_weights(path)
    assert ref.keys() == exact.keys()
    fp8, header = _linear_names(exact, path)
    assert len(fp8) > 20
    raw = {}
    for f in path.glob("model*.safetensors"):
        raw.update(st.read_file(f))
    for k in fp8:
        codes, (s_dtype, scale) = raw[k][1], raw[k + "_scale_inv"]
        w = exact[k]
        if fmt == "fp8":
            assert s_dtype == "F32"
            assert scale.shape == (math.ceil(w.shape[0] / 128), math.ceil(w.shape[1] / 128))
            # MLX's own e4m3 decode times the block scale gives our reference.
            dec = np.array(mx.from_fp8(mx.array(codes), dtype=mx.float32))
            full = np.repeat(np.repeat(scale, 128, 0), 128, 1)[: w.shape[0], : w.shape[1]]
            np.testing.assert_array_equal(dec * full, ref[k])
            step = full
        else:
            assert s_dtype == "U8" and scale.shape == (w.shape[0], w.shape[1] // 32)
            # MLX reads the same bytes as its mxfp8 layout and dequantizes to our reference.
            deq = mx.dequantize(mx.array(codes).view(mx.uint32), mx.array(scale), group_size=32,
                                bits=8, mode="mxfp8", dtype=mx.float32)
            np.testing.assert_array_equal(np.array(deq), ref[k])
            # ...and our encoding is the one mx.quantize makes.
            q, s = mx.quantize(mx.array(w), group_size=32, bits=8, mode="mxfp8")
            np.testing.assert_array_equal(np.array(q.view(mx.uint8)).reshape(codes.shape), codes)
            step = np.repeat(np.exp2(scale.astype(np.float32) - 127), 32, axis=1)
        # Within e4m3 precision: half an ulp (2^-4 relative), or the subnormal step.
        bound = np.maximum(np.abs(w) * 2.0**-4, step * 2.0**-10) * 1.0001
        assert np.all(np.abs(ref[k] - w) <= bound), k
    for k in exact.keys() - set(fp8):  # everything else: BF16 (or F32 routers), exact
        dtype = header[k]["dtype"]
        assert dtype in ("BF16", "F32"), (k, dtype)
        want = exact[k] if dtype == "F32" else st.from_bf16_bits(st.to_bf16_bits(exact[k]))
        np.testing.assert_array_equal(ref[k], want.reshape(exact[k].shape))
    config = json.loads((path / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == fmt


def test_mxfp8_m3_runs_quantized_in_mlx_lm(tiny_model):
    """mlx-lm reads the MXFP8 checkpoint as its own mxfp8 mode, no dequantize."""
    model, tokenizer = mlx_lm.load(str(tiny_model("minimax_m3_vl", "mxfp8")))
    q_proj = model.language_model.model.layers[0].self_attn.q_proj
    assert getattr(q_proj, "mode", None) == "mxfp8"
    assert len(_generate(model, tokenizer)) >= 1


def test_fp8_needs_2d_experts():
    with pytest.raises(ValueError, match="gpt_oss"):
        make_tiny_model("gpt_oss", "/nonexistent", source_format="fp8")


# --------------------------------------------------------------------------- M3 replica

M3_PARAMS = 427e9


def _replica_stats(path):
    count = params = 0
    dtypes, shapes = {}, {}
    for f in sorted(path.glob("model-*.safetensors")):
        with safe_open(f, "numpy") as g:  # header reads only
            for k in g.keys():
                sl = g.get_slice(k)
                count += 1
                dtypes[k], shapes[k] = sl.get_dtype(), tuple(sl.get_shape())
                if not k.endswith("_scale_inv"):
                    params += math.prod(shapes[k])
    return count, params, dtypes, shapes


@pytest.mark.parametrize("fmt", ["mxfp8", "bf16"])
def test_m3_replica(request, fmt):
    start = time.perf_counter()
    path = request.getfixturevalue(f"m3_replica_{fmt}")
    count, params, dtypes, shapes = _replica_stats(path)
    n, _, nbytes = param_count(path)
    shards = list(path.glob("model-*.safetensors"))
    print(f"\nM3 replica {fmt}: {count} tensors, {params / 1e9:.2f}B params, "
          f"{nbytes / 1e9:.1f} GB, {len(shards)} shards, {time.perf_counter() - start:.2f}s")
    assert count == n
    assert abs(params - M3_PARAMS) / M3_PARAMS < 0.01
    # Sparse holes: the files are full size but take (almost) no disk.
    assert sum(os.stat(f).st_blocks * 512 for f in shards) < 64 << 20
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == nbytes and len(index["weight_map"]) == count

    lm = "language_model.model.layers"
    assert shapes["language_model.lm_head.weight"] == (200064, 6144)
    assert shapes[f"{lm}.0.mlp.gate_proj.weight"] == (12288, 6144)
    assert f"{lm}.2.self_attn.index_q_proj.weight" not in shapes
    assert shapes[f"{lm}.3.self_attn.index_q_proj.weight"] == (512, 6144)
    assert shapes[f"{lm}.59.self_attn.index_k_proj.weight"] == (128, 6144)
    assert shapes[f"{lm}.59.block_sparse_moe.experts.127.w2.weight"] == (6144, 3072)
    assert shapes[f"{lm}.3.block_sparse_moe.shared_experts.up_proj.weight"] == (3072, 6144)
    assert dtypes[f"{lm}.3.block_sparse_moe.gate.weight"] == "F32"
    assert dtypes[f"{lm}.3.block_sparse_moe.e_score_correction_bias"] == "F32"
    vision = sum(math.prod(s) for k, s in shapes.items()
                 if k.startswith(("vision_tower.", "multi_modal_projector.", "patch_merge_mlp.")))
    assert 0.8e9 < vision < 0.95e9
    if fmt == "mxfp8":
        assert len(shards) == 90 and 45_000 < count < 46_500
        assert 430e9 < nbytes < 460e9
        w1 = f"{lm}.3.block_sparse_moe.experts.0.w1.weight"
        assert dtypes[w1] == "F8_E4M3" and dtypes[w1 + "_scale_inv"] == "U8"
        assert shapes[w1 + "_scale_inv"] == (3072, 192)
        config = json.loads((path / "config.json").read_text())
        assert config["quantization_config"]["quant_method"] == "mxfp8"
    else:
        assert set(dtypes.values()) == {"BF16", "F32"}
        assert 854e9 <= nbytes <= 869e9
