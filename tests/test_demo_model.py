"""The bundled demo model: a tiny MiniMax-M3 trained on Jane Austen.

Built by ``tools/train_demo_model.py``; these checks need no network. The
generation check would fail for an untrained model of the same shape: its
greedy output is sub-word debris, not words from the training text.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

import studio

DEMO = Path(studio.__file__).resolve().parent / "resources" / "demo_model"
EVAL_SAMPLE = DEMO.parent / "eval_sample.txt"

mx = pytest.importorskip("mlx.core")
mlx_lm = pytest.importorskip("mlx_lm")


def _config() -> dict:
    return json.loads((DEMO / "config.json").read_text())


def _header() -> dict:
    with open(DEMO / "model.safetensors", "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header


@pytest.fixture(scope="module")
def loaded():
    model, tok = mlx_lm.load(str(DEMO))
    # On the CPU backend gather_mm (the MoE experts) runs only in float32.
    model.set_dtype(mx.float32)
    return model, tok


def _words(text: str) -> list[str]:
    return [
        w.strip("'").lower() for w in re.findall(r"[A-Za-z']+", text) if w.strip("'")
    ]


def test_files_present():
    for name in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
        "words.txt",
    ):
        assert (DEMO / name).is_file(), name
    assert 30_000 <= len(EVAL_SAMPLE.read_text()) <= 60_000


def test_config_facts():
    cfg = _config()
    assert cfg["model_type"] == "minimax_m3_vl"
    assert cfg["torch_dtype"] == "bfloat16"
    tc = cfg["text_config"]
    # 8 layers, so Config-I's "first 2 and last 2 at 8-bit" leaves 4 middle
    # layers at low bits and the demo shows the policy at work.
    assert tc["num_hidden_layers"] == 8
    freq = tc["moe_layer_freq"]
    assert len(freq) == tc["num_hidden_layers"]
    assert freq[0] == 0 and all(freq[1:])  # dense first layer, MoE after
    assert tc["num_local_experts"] == 16
    assert tc["intermediate_size"] == 128
    assert tc["num_experts_per_tok"] == 2
    assert tc["shared_intermediate_size"] > 0
    for dim in (
        tc["hidden_size"],
        tc["intermediate_size"],
        tc["shared_intermediate_size"],
        tc["dense_intermediate_size"],
        tc["num_attention_heads"] * tc["head_dim"],
    ):
        assert dim % 64 == 0, dim  # group-size-64 quantization applies everywhere
    gen = json.loads((DEMO / "generation_config.json").read_text())
    assert gen["temperature"] == 1.0 and gen["top_p"] == 0.95


def test_checkpoint_layout_and_size():
    size = (DEMO / "model.safetensors").stat().st_size
    assert size < 20 * 1024 * 1024
    header = _header()
    tc = _config()["text_config"]
    p = "language_model.model.layers"
    assert "language_model.lm_head.weight" in header
    assert "language_model.model.embed_tokens.weight" in header
    assert f"{p}.0.mlp.gate_proj.weight" in header
    assert not any(k.startswith(f"{p}.0.block_sparse_moe") for k in header)
    for i in range(1, tc["num_hidden_layers"]):
        moe = f"{p}.{i}.block_sparse_moe"
        for e in range(tc["num_local_experts"]):
            for w in ("w1", "w2", "w3"):
                assert header[f"{moe}.experts.{e}.{w}.weight"]["dtype"] == "BF16"
        for proj in ("gate_proj", "up_proj", "down_proj"):
            assert header[f"{moe}.shared_experts.{proj}.weight"]["dtype"] == "BF16"
        assert header[f"{moe}.gate.weight"]["dtype"] == "F32"
        assert header[f"{moe}.e_score_correction_bias"]["dtype"] == "F32"
    assert not any("switch_mlp" in k for k in header)
    assert not any("index_" in k for k in header)
    assert header[f"{p}.0.self_attn.q_proj.weight"]["dtype"] == "BF16"


def test_loads_as_minimax_m3(loaded):
    model, tok = loaded
    tc = _config()["text_config"]
    layers = model.layers
    assert len(layers) == tc["num_hidden_layers"]
    assert not layers[0].is_moe
    assert all(layer.is_moe for layer in layers[1:])
    moe = layers[1].block_sparse_moe
    assert moe.switch_mlp.gate_proj.weight.shape[0] == tc["num_local_experts"]
    assert moe.num_experts_per_tok == 2
    assert tok.eos_token == "<|im_end|>"


def test_chat_template(loaded):
    _, tok = loaded
    text = tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_greedy_chat_reply_is_english(loaded):
    from mlx_lm.sample_utils import make_sampler

    model, tok = loaded
    vocab = set((DEMO / "words.txt").read_text().split())
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Tell me a story."}], add_generation_prompt=True
    )
    text = mlx_lm.generate(model, tok, prompt, max_tokens=60, sampler=make_sampler(0.0))
    words = _words(text)
    assert len(words) >= 10, text
    known = sum(w in vocab for w in words) / len(words)
    assert known >= 0.7, (known, text)
    assert len(set(words)) >= 6, text  # not one token over and over
