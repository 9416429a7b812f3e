"""The demo model's shape (a small minimax_m3_vl) and its weights under the real checkpoint's names."""

from __future__ import annotations

import re

from demo_model.tokenizer import MAX_POSITIONS, VOCAB_SIZE
from studio.core.defaults import DEFAULT_GROUP_SIZE

# Everything but the depth and width, which text_config() fills in.
TEXT_CONFIG = {
    "model_type": "minimax_m3",
    "vocab_size": VOCAB_SIZE,
    "num_key_value_heads": 1,
    "head_dim": 64,
    "partial_rotary_factor": 0.5,
    "rope_theta": 10000.0,
    "max_position_embeddings": MAX_POSITIONS,
    "dense_intermediate_size": 512,
    "intermediate_size": 128,
    "shared_intermediate_size": 128,
    "num_local_experts": 16,
    "num_experts_per_tok": 2,
    "routed_scaling_factor": 2.0,
    "rms_norm_eps": 1e-6,
    "use_qk_norm": True,
    "use_gemma_norm": True,
    "swiglu_alpha": 1.702,
    "swiglu_limit": 7.0,
    "tie_word_embeddings": False,
    "scoring_func": "sigmoid",
    "use_routing_bias": True,
    "torch_dtype": "bfloat16",
}


def text_config(layers: int, hidden: int) -> dict:
    """TEXT_CONFIG at the given depth and width: layer 0 dense, the rest MoE,
    one query head of 64 per 64 of hidden (so every linear input dim is a
    multiple of 64, the quantization group size)."""
    if layers < 2 or hidden % DEFAULT_GROUP_SIZE:
        raise SystemExit(f"need --layers >= 2 and --hidden a multiple of {DEFAULT_GROUP_SIZE}")
    tc = dict(TEXT_CONFIG)
    tc["hidden_size"] = hidden
    tc["num_hidden_layers"] = layers
    tc["num_attention_heads"] = hidden // tc["head_dim"]
    tc["moe_layer_freq"] = [0] + [1] * (layers - 1)
    return tc


def model_config(tc: dict) -> dict:
    return {
        "architectures": ["MiniMaxM3VLForConditionalGeneration"],
        "model_type": "minimax_m3_vl",
        "text_config": dict(tc),
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "eos_token_id": None,  # filled in once the tokenizer exists
    }


def make_model(config: dict):
    from mlx_lm.models.minimax_m3_vl import Model, ModelArgs

    return Model(ModelArgs.from_dict(config))


def to_hf_weights(model) -> dict:
    """The trained MLX parameters under the real checkpoint's names and dtypes."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    names = {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}
    out = {}
    for name, w in tree_flatten(model.parameters()):
        m = re.match(r"(.*\.block_sparse_moe)\.switch_mlp\.(\w+)\.weight$", name)
        if m:
            for e in range(w.shape[0]):
                expert = f"{m.group(1)}.experts.{e}.{names[m.group(2)]}.weight"
                out[expert] = w[e].astype(mx.bfloat16)
            continue
        keep_f32 = name.endswith(
            ("block_sparse_moe.gate.weight", "e_score_correction_bias")
        )
        out[name] = w.astype(mx.float32 if keep_f32 else mx.bfloat16)
    return out
