"""Tiny real-weight checkpoints, named and laid out as each architecture's official
Hugging Face checkpoint is (experts unstacked, one tensor per expert and
projection), not as MLX stores them.

Each architecture is one function returning (config.json dict, tensor specs in
state-dict order). A spec's `kind` says how to fill and store it:

  linear  2-D attention/MLP/expert projection: the tensors FP8/MXFP8 sources encode
  weight  any other float tensor (embeddings, lm_head, biases, sinks, fused 3-D experts)
  norm    RMSNorm/LayerNorm scale, near 1
  gnorm   Gemma-style RMSNorm (applied as 1 + w), near 0
  f32     stored as F32 in every format (MiniMax routers, routing biases)

Dims are tiny (hidden 128) but keep 32, 64 and 128 dividing the input dim of
every main linear, so every group size the studio offers applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

VOCAB = 512  # > the tokenizer's 269 tokens, as real checkpoints pad the table

# Whether MiniMax-M3's MXFP8 release stores the sparse-attention indexer
# projections in FP8. Assumed not: with them BF16 the full tensor count is
# 45,724, matching the release's ~45,700; FP8 would add 114 scale tensors.
M3_INDEXER_FP8 = False


@dataclass
class Specs:
    items: list[tuple[str, tuple[int, ...], str]] = field(default_factory=list)

    def add(self, name: str, shape, kind: str = "weight") -> None:
        self.items.append((name, tuple(shape), kind))


def _llama_attn(s: Specs, p: str, hidden: int, heads: int, kv: int, hd: int,
                *, bias: bool = False, qk_norm: int | None = None) -> None:
    """q/k/v/o projections (optionally biased) and optional per-head q/k norms."""
    for proj, out in (("q_proj", heads * hd), ("k_proj", kv * hd), ("v_proj", kv * hd)):
        s.add(f"{p}.self_attn.{proj}.weight", (out, hidden), "linear")
        if bias:
            s.add(f"{p}.self_attn.{proj}.bias", (out,))
    s.add(f"{p}.self_attn.o_proj.weight", (hidden, heads * hd), "linear")
    if bias:
        s.add(f"{p}.self_attn.o_proj.bias", (hidden,))
    if qk_norm:
        s.add(f"{p}.self_attn.q_norm.weight", (qk_norm,), "norm")
        s.add(f"{p}.self_attn.k_norm.weight", (qk_norm,), "norm")


def _mlp(s: Specs, p: str, hidden: int, inter: int, names=("gate_proj", "up_proj", "down_proj")):
    gate, up, down = names
    s.add(f"{p}.{gate}.weight", (inter, hidden), "linear")
    s.add(f"{p}.{up}.weight", (inter, hidden), "linear")
    s.add(f"{p}.{down}.weight", (hidden, inter), "linear")


def _layer_norms(s: Specs, p: str, hidden: int, kind: str = "norm") -> None:
    s.add(f"{p}.input_layernorm.weight", (hidden,), kind)
    s.add(f"{p}.post_attention_layernorm.weight", (hidden,), kind)


def _ends(s: Specs, hidden: int, *, tied: bool = False) -> None:
    s.add("model.norm.weight", (hidden,), "norm")
    if not tied:
        s.add("lm_head.weight", (VOCAB, hidden))


# --------------------------------------------------------------------------- archs


def minimax_m3_vl() -> tuple[dict, Specs]:
    """Tiny MiniMax-M3: layer 0 dense, layers 1-2 MoE."""
    return m3_layout(hidden=128, layers=3, dense_layers=1, experts=8, top_k=2, heads=4,
                     kv_heads=2, head_dim=32, inter=128, dense_inter=256, shared_inter=128,
                     index_heads=2, index_dim=32, index_block=16, vocab=VOCAB,
                     vision_hidden=64, vision_inter=256, vision_layers=1,
                     projector_hidden=128, max_pos=4096)


def m3_layout(*, hidden, layers, dense_layers, experts, top_k, heads, kv_heads, head_dim,
              inter, dense_inter, shared_inter, index_heads, index_dim, index_block, vocab,
              vision_hidden, vision_inter, vision_layers, projector_hidden,
              max_pos) -> tuple[dict, Specs]:
    """MiniMax-M3 (`minimax_m3_vl`) at any size; write_m3_replica uses the real one.

    Dense MLP on the first `dense_layers`, then MoE layers with a shared expert,
    F32 router and routing bias, and the sparse-attention indexer (on MoE
    layers only); Gemma-style norms; per-head q/k norms; a CLIP-style vision
    tower with projector and patch-merge MLP, which mlx-lm drops by prefix.
    """
    H, vh, ph = hidden, vision_hidden, projector_hidden
    moe = [0] * dense_layers + [1] * (layers - dense_layers)
    s = Specs()
    # Vision side, named as the upstream checkpoint names it (transformers'
    # conversion mapping for minimax_m3_vl renames these on load).
    v = "vision_tower.vision_model"
    s.add(f"{v}.embeddings.patch_embedding.weight", (vh, 3, 2, 14, 14))  # Conv3d, no bias
    s.add(f"{v}.pre_layrnorm.weight", (vh,), "norm")
    s.add(f"{v}.pre_layrnorm.bias", (vh,))
    for b in range(vision_layers):
        e = f"{v}.encoder.layers.{b}"
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            s.add(f"{e}.self_attn.{proj}.weight", (vh, vh))
            s.add(f"{e}.self_attn.{proj}.bias", (vh,))
        s.add(f"{e}.layer_norm1.weight", (vh,), "norm")
        s.add(f"{e}.layer_norm1.bias", (vh,))
        s.add(f"{e}.mlp.fc1.weight", (vision_inter, vh))
        s.add(f"{e}.mlp.fc1.bias", (vision_inter,))
        s.add(f"{e}.mlp.fc2.weight", (vh, vision_inter))
        s.add(f"{e}.mlp.fc2.bias", (vh,))
        s.add(f"{e}.layer_norm2.weight", (vh,), "norm")
        s.add(f"{e}.layer_norm2.bias", (vh,))
    # Per patch: vision -> projector -> text width; then 2x2 patches are
    # concatenated (4 * text width) and fused back to one text token.
    s.add("multi_modal_projector.linear_1.weight", (ph, vh))
    s.add("multi_modal_projector.linear_1.bias", (ph,))
    s.add("multi_modal_projector.linear_2.weight", (H, ph))
    s.add("multi_modal_projector.linear_2.bias", (H,))
    s.add("patch_merge_mlp.linear_1.weight", (ph, 4 * H))
    s.add("patch_merge_mlp.linear_1.bias", (ph,))
    s.add("patch_merge_mlp.linear_2.weight", (H, ph))
    s.add("patch_merge_mlp.linear_2.bias", (H,))

    s.add("language_model.model.embed_tokens.weight", (vocab, H))
    for i in range(layers):
        p = f"language_model.model.layers.{i}"
        _llama_attn(s, p, H, heads, kv_heads, head_dim)
        s.add(f"{p}.self_attn.q_norm.weight", (head_dim,), "gnorm")
        s.add(f"{p}.self_attn.k_norm.weight", (head_dim,), "gnorm")
        if moe[i]:
            # The indexer sits on self_attn, on MoE (sparse-attention) layers only.
            ikind = "linear" if M3_INDEXER_FP8 else "weight"
            s.add(f"{p}.self_attn.index_q_proj.weight", (index_heads * index_dim, H), ikind)
            s.add(f"{p}.self_attn.index_k_proj.weight", (index_dim, H), ikind)
            s.add(f"{p}.self_attn.index_q_norm.weight", (index_dim,), "gnorm")
            s.add(f"{p}.self_attn.index_k_norm.weight", (index_dim,), "gnorm")
            m = f"{p}.block_sparse_moe"
            s.add(f"{m}.gate.weight", (experts, H), "f32")
            s.add(f"{m}.e_score_correction_bias", (experts,), "f32")
            for e in range(experts):
                _mlp(s, f"{m}.experts.{e}", H, inter, names=("w1", "w3", "w2"))
            _mlp(s, f"{m}.shared_experts", H, shared_inter)
        else:
            _mlp(s, f"{p}.mlp", H, dense_inter)
        _layer_norms(s, p, H, "gnorm")
    s.add("language_model.model.norm.weight", (H,), "gnorm")
    s.add("language_model.lm_head.weight", (vocab, H))

    text = {
        "model_type": "minimax_m3",
        "hidden_size": H, "intermediate_size": inter, "dense_intermediate_size": dense_inter,
        "shared_intermediate_size": shared_inter, "n_shared_experts": 1,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim,
        "num_hidden_layers": layers, "num_local_experts": experts,
        "num_experts_per_tok": top_k, "moe_layer_freq": moe, "vocab_size": vocab,
        "max_position_embeddings": max_pos, "rms_norm_eps": 1e-6, "rope_theta": 5000000.0,
        "rotary_dim": head_dim // 2, "partial_rotary_factor": 0.5,
        "routed_scaling_factor": 2.0, "scoring_func": "sigmoid", "use_routing_bias": True,
        "hidden_act": "swigluoai", "swiglu_alpha": 1.702, "swiglu_beta": 1.0,
        "swiglu_limit": 7.0, "use_qk_norm": True, "qk_norm_type": "per_head",
        "use_gemma_norm": True, "attention_output_gate": False, "tie_word_embeddings": False,
        "sparse_attention_config": {
            "use_sparse_attention": True, "sparse_num_index_heads": index_heads,
            "sparse_index_dim": index_dim, "sparse_block_size": index_block,
            "sparse_topk_blocks": 16 if index_block == 128 else 2,
            "sparse_local_block": 1, "sparse_init_block": 0, "sparse_score_type": "max",
            "sparse_attention_freq": moe,
        },
    }
    vision = {"model_type": "minimax_m3_vl_vision", "hidden_size": vh,
              "num_hidden_layers": vision_layers, "num_attention_heads": max(2, vh // 80),
              "intermediate_size": vision_inter, "patch_size": 14, "temporal_patch_size": 2,
              "spatial_merge_size": 2, "image_size": 2016, "num_channels": 3,
              "layer_norm_eps": 1e-5, "hidden_act": "gelu"}
    config = {"architectures": ["MiniMaxM3VLForConditionalGeneration"],
              "model_type": "minimax_m3_vl", "text_config": text, "vision_config": vision,
              "projector_hidden_size": ph, "image_token_index": 200025,
              "video_token_index": 200026, "tie_word_embeddings": False}
    return config, s


def minimax() -> tuple[dict, Specs]:
    """MiniMax-M2.x: every layer MoE (w1/w3/w2 experts), F32 router, routing bias,
    q_norm/k_norm over all heads at once (not per head), partial rotary."""
    H, L, E, heads, kv, hd, inter = 128, 2, 8, 4, 2, 32, 128
    s = Specs()
    s.add("model.embed_tokens.weight", (VOCAB, H))
    for i in range(L):
        p = f"model.layers.{i}"
        _llama_attn(s, p, H, heads, kv, hd)
        s.add(f"{p}.self_attn.q_norm.weight", (heads * hd,), "norm")
        s.add(f"{p}.self_attn.k_norm.weight", (kv * hd,), "norm")
        m = f"{p}.block_sparse_moe"
        s.add(f"{m}.gate.weight", (E, H), "f32")
        s.add(f"{m}.e_score_correction_bias", (E,), "f32")
        for e in range(E):
            _mlp(s, f"{m}.experts.{e}", H, inter, names=("w1", "w3", "w2"))
        _layer_norms(s, p, H)
    _ends(s, H)
    config = {
        # The Hub's M2 says minimax_m2; mlx-lm remaps it to its `minimax` module.
        "architectures": ["MiniMaxM2ForCausalLM"], "model_type": "minimax_m2",
        "hidden_size": H, "intermediate_size": inter, "num_attention_heads": heads,
        "num_key_value_heads": kv, "head_dim": hd, "num_hidden_layers": L,
        "num_local_experts": E, "num_experts_per_tok": 2, "shared_intermediate_size": 0,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 5000000.0,
        "rotary_dim": hd // 2, "partial_rotary_factor": 0.5, "vocab_size": VOCAB,
        "tie_word_embeddings": False, "scoring_func": "sigmoid", "use_routing_bias": True,
        "use_qk_norm": True, "qk_norm_type": "per_layer", "hidden_act": "silu",
    }
    return config, s


def qwen3_moe() -> tuple[dict, Specs]:
    H, L, E, heads, kv, hd, inter, moe_inter = 128, 2, 8, 4, 2, 32, 256, 128
    s = Specs()
    s.add("model.embed_tokens.weight", (VOCAB, H))
    for i in range(L):
        p = f"model.layers.{i}"
        _llama_attn(s, p, H, heads, kv, hd, qk_norm=hd)
        s.add(f"{p}.mlp.gate.weight", (E, H))
        for e in range(E):
            _mlp(s, f"{p}.mlp.experts.{e}", H, moe_inter)
        _layer_norms(s, p, H)
    _ends(s, H)
    config = {
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
        "hidden_size": H, "intermediate_size": inter, "moe_intermediate_size": moe_inter,
        "num_hidden_layers": L, "num_attention_heads": heads, "num_key_value_heads": kv,
        "head_dim": hd, "num_experts": E, "num_experts_per_tok": 2, "decoder_sparse_step": 1,
        "mlp_only_layers": [], "norm_topk_prob": True, "rms_norm_eps": 1e-6,
        "vocab_size": VOCAB, "rope_theta": 1000000.0, "rope_scaling": None,
        "max_position_embeddings": 4096, "tie_word_embeddings": False,
        "attention_bias": False, "hidden_act": "silu", "router_aux_loss_coef": 0.001,
    }
    return config, s


def deepseek_v3() -> tuple[dict, Specs]:
    """DeepSeek-V3: MLA low-rank attention, first layer dense, MoE with a shared
    expert and a routing bias under mlp.gate, plus the MTP layer at index
    num_hidden_layers that the real checkpoint ships (model.layers.61 there)."""
    H, L, E, heads = 128, 3, 8, 4
    q_rank, kv_rank, nope, rope, v_dim = 128, 128, 32, 16, 32
    inter, moe_inter = 256, 128
    s = Specs()
    s.add("model.embed_tokens.weight", (VOCAB, H))

    def layer(p: str, moe: bool) -> None:
        a = f"{p}.self_attn"
        s.add(f"{a}.q_a_proj.weight", (q_rank, H), "linear")
        s.add(f"{a}.q_a_layernorm.weight", (q_rank,), "norm")
        s.add(f"{a}.q_b_proj.weight", (heads * (nope + rope), q_rank), "linear")
        # kv_rank + rope = 144 rows: the last 128x128 FP8 block is partial, as in V3 (576).
        s.add(f"{a}.kv_a_proj_with_mqa.weight", (kv_rank + rope, H), "linear")
        s.add(f"{a}.kv_a_layernorm.weight", (kv_rank,), "norm")
        s.add(f"{a}.kv_b_proj.weight", (heads * (nope + v_dim), kv_rank), "linear")
        s.add(f"{a}.o_proj.weight", (H, heads * v_dim), "linear")
        if moe:
            s.add(f"{p}.mlp.gate.weight", (E, H))
            s.add(f"{p}.mlp.gate.e_score_correction_bias", (E,), "f32")
            for e in range(E):
                _mlp(s, f"{p}.mlp.experts.{e}", H, moe_inter)
            _mlp(s, f"{p}.mlp.shared_experts", H, moe_inter)
        else:
            _mlp(s, f"{p}.mlp", H, inter)
        _layer_norms(s, p, H)

    for i in range(L):
        layer(f"model.layers.{i}", moe=i >= 1)
    _ends(s, H)
    # Multi-token prediction module: its own embedding copy, two norms, the
    # projection of [h; e] back to hidden, one MoE decoder layer and a head.
    mtp = f"model.layers.{L}"
    s.add(f"{mtp}.embed_tokens.weight", (VOCAB, H))
    s.add(f"{mtp}.enorm.weight", (H,), "norm")
    s.add(f"{mtp}.hnorm.weight", (H,), "norm")
    s.add(f"{mtp}.eh_proj.weight", (H, 2 * H))
    layer(mtp, moe=True)
    s.add(f"{mtp}.shared_head.norm.weight", (H,), "norm")
    s.add(f"{mtp}.shared_head.head.weight", (VOCAB, H))
    config = {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
        "vocab_size": VOCAB, "hidden_size": H, "intermediate_size": inter,
        "moe_intermediate_size": moe_inter, "num_hidden_layers": L,
        "num_nextn_predict_layers": 1, "num_attention_heads": heads,
        "num_key_value_heads": heads, "n_shared_experts": 1, "n_routed_experts": E,
        "routed_scaling_factor": 2.5, "kv_lora_rank": kv_rank, "q_lora_rank": q_rank,
        "qk_rope_head_dim": rope, "v_head_dim": v_dim, "qk_nope_head_dim": nope,
        "topk_method": "noaux_tc", "scoring_func": "sigmoid", "norm_topk_prob": True,
        "n_group": 2, "topk_group": 1, "num_experts_per_tok": 2, "moe_layer_freq": 1,
        "first_k_dense_replace": 1, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "attention_bias": False,
        "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024,
                         "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
        "tie_word_embeddings": False, "hidden_act": "silu",
    }
    return config, s


def mixtral() -> tuple[dict, Specs]:
    H, L, E, heads, kv, inter = 128, 2, 8, 4, 2, 256
    s = Specs()
    s.add("model.embed_tokens.weight", (VOCAB, H))
    for i in range(L):
        p = f"model.layers.{i}"
        _llama_attn(s, p, H, heads, kv, H // heads)
        s.add(f"{p}.block_sparse_moe.gate.weight", (E, H))
        for e in range(E):
            _mlp(s, f"{p}.block_sparse_moe.experts.{e}", H, inter, names=("w1", "w3", "w2"))
        _layer_norms(s, p, H)
    _ends(s, H)
    config = {
        "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
        "hidden_size": H, "intermediate_size": inter, "num_hidden_layers": L,
        "num_attention_heads": heads, "num_key_value_heads": kv, "num_local_experts": E,
        "num_experts_per_tok": 2, "vocab_size": VOCAB, "rms_norm_eps": 1e-5,
        "rope_theta": 1000000.0, "max_position_embeddings": 4096, "sliding_window": None,
        "tie_word_embeddings": False, "hidden_act": "silu", "router_aux_loss_coef": 0.02,
    }
    return config, s


def gpt_oss() -> tuple[dict, Specs]:
    """gpt-oss in its unquantized Hugging Face layout (as the BF16 re-uploads
    have it): fused, interleaved `experts.gate_up_proj [E, hidden, 2*inter]`
    (gate = [..., ::2], up = [..., 1::2]) with `gate_up_proj_bias`,
    `down_proj [E, inter, hidden]` with `down_proj_bias`, all stored
    input-major with no `.weight` suffix; a biased router; attention sinks."""
    H, L, E, heads, kv, hd, inter = 128, 2, 8, 4, 2, 32, 256
    s = Specs()
    s.add("model.embed_tokens.weight", (VOCAB, H))
    for i in range(L):
        p = f"model.layers.{i}"
        _llama_attn(s, p, H, heads, kv, hd, bias=True)
        s.add(f"{p}.self_attn.sinks", (heads,))
        s.add(f"{p}.mlp.router.weight", (E, H))
        s.add(f"{p}.mlp.router.bias", (E,))
        s.add(f"{p}.mlp.experts.gate_up_proj", (E, H, 2 * inter))
        s.add(f"{p}.mlp.experts.gate_up_proj_bias", (E, 2 * inter))
        s.add(f"{p}.mlp.experts.down_proj", (E, inter, H))
        s.add(f"{p}.mlp.experts.down_proj_bias", (E, H))
        _layer_norms(s, p, H)
    _ends(s, H)
    config = {
        "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss",
        "hidden_size": H, "intermediate_size": inter, "head_dim": hd,
        "num_attention_heads": heads, "num_key_value_heads": kv, "num_hidden_layers": L,
        "num_local_experts": E, "num_experts_per_tok": 2, "experts_per_token": 2,
        "vocab_size": VOCAB, "rms_norm_eps": 1e-5, "sliding_window": 128,
        "layer_types": ["sliding_attention", "full_attention"] * (L // 2),
        "rope_theta": 150000.0,
        "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0,
                         "beta_slow": 1.0, "original_max_position_embeddings": 4096,
                         "truncate": False},
        "max_position_embeddings": 131072, "initial_context_length": 4096,
        "attention_bias": True, "swiglu_limit": 7.0, "tie_word_embeddings": False,
        "hidden_act": "silu",
    }
    return config, s


def llama() -> tuple[dict, Specs]:
    H, L, heads, kv, inter = 128, 2, 4, 2, 256
    s = Specs()
    s.add("model.embed_tokens.weight", (VOCAB, H))
    for i in range(L):
        p = f"model.layers.{i}"
        _llama_attn(s, p, H, heads, kv, H // heads)
        _mlp(s, f"{p}.mlp", H, inter)
        _layer_norms(s, p, H)
    _ends(s, H)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": H, "intermediate_size": inter, "num_hidden_layers": L,
        "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": H // heads,
        "vocab_size": VOCAB, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "max_position_embeddings": 4096, "attention_bias": False, "mlp_bias": False,
        "tie_word_embeddings": False, "hidden_act": "silu",
    }
    return config, s


def qwen3() -> tuple[dict, Specs]:
    """Dense Qwen3 with tied embeddings (no lm_head tensor), as its small sizes ship."""
    H, L, heads, kv, hd, inter = 128, 2, 4, 2, 32, 256
    s = Specs()
    s.add("model.embed_tokens.weight", (VOCAB, H))
    for i in range(L):
        p = f"model.layers.{i}"
        _llama_attn(s, p, H, heads, kv, hd, qk_norm=hd)
        _mlp(s, f"{p}.mlp", H, inter)
        _layer_norms(s, p, H)
    _ends(s, H, tied=True)
    config = {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
        "hidden_size": H, "intermediate_size": inter, "num_hidden_layers": L,
        "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": hd,
        "vocab_size": VOCAB, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "max_position_embeddings": 4096, "tie_word_embeddings": True,
        "attention_bias": False, "hidden_act": "silu",
    }
    return config, s


ARCH_BUILDERS = {
    "minimax_m3_vl": minimax_m3_vl, "minimax": minimax, "qwen3_moe": qwen3_moe,
    "deepseek_v3": deepseek_v3, "mixtral": mixtral, "gpt_oss": gpt_oss,
    "llama": llama, "qwen3": qwen3,
}
