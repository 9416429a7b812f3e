"""A header-only replica of the full MiniMax-M3 checkpoint (about 427B parameters).

Every tensor name, shape and dtype of the official release, in shard files
whose headers and sizes are real but whose data regions are sparse holes: the
inventory, role, policy and estimate code can run on the real model's shape in
a few seconds and no disk. Reading tensor data gives zeros.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from . import st
from .tiny import m3_layout

# The official MXFP8 release ships 90 shards; bf16 exports use ~5 GB shards
# (save_pretrained's usual max_shard_size).
MXFP8_SHARDS = 90
BF16_SHARD_BYTES = 5_000_000_000

M3_DIMS = dict(hidden=6144, layers=60, dense_layers=3, experts=128, top_k=4, heads=64,
               kv_heads=4, head_dim=128, inter=3072, dense_inter=12288, shared_inter=3072,
               index_heads=4, index_dim=128, index_block=128, vocab=200064,
               # 0.87B vision side: 32 CLIP layers of 1280, projector and merge MLP.
               vision_hidden=1280, vision_inter=5120, vision_layers=32,
               projector_hidden=6144, max_pos=1048576)


M3_EOS = "[e~["

M3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ ']~b]' + message['role'] + '\\n' + message['content'] + '[e~[\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ ']~b]ai\\n' }}{% endif %}"
)


def m3_tensors(source_format: str) -> dict[str, st.Tensor]:
    """The official M3 tensor table (data-less). In MXFP8 every attention,
    dense-MLP, shared-expert and expert projection is F8_E4M3 with a U8 E8M0
    `weight_scale_inv` [out, in/32]; router and routing bias F32; everything
    else (indexer, norms, embeddings, lm_head, vision) BF16."""
    _, specs = m3_layout(**M3_DIMS)
    out: dict[str, st.Tensor] = {}
    for name, shape, kind in specs.items:
        if kind == "f32":
            out[name] = st.Tensor("F32", shape)
        elif kind == "linear" and source_format == "mxfp8":
            out[name] = st.Tensor("F8_E4M3", shape)
            out[name + "_scale_inv"] = st.Tensor("U8", (shape[0], shape[1] // 32))
        else:
            out[name] = st.Tensor("BF16", shape)
    return out


def write_m3_replica(path: Path, source_format: str = "mxfp8") -> Path:
    """Write the header-only MiniMax-M3 replica ("mxfp8" or "bf16") into `path`."""
    if source_format not in ("mxfp8", "bf16"):
        raise ValueError(f"source_format must be 'mxfp8' or 'bf16', not {source_format!r}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = m3_tensors(source_format)
    total = sum(t.nbytes for t in tensors.values())
    shards = MXFP8_SHARDS if source_format == "mxfp8" else math.ceil(total / BF16_SHARD_BYTES)
    st.write_sharded(path, tensors, shards, header_only=True)

    config, _ = m3_layout(**M3_DIMS)
    config["torch_dtype"] = "bfloat16"
    config["transformers_version"] = "4.57.1"
    config["text_config"]["eos_token_id"] = 200020
    config["text_config"]["bos_token_id"] = 200034
    if source_format == "mxfp8":
        config["quantization_config"] = {
            "quant_method": "mxfp8", "fmt": "e4m3", "scale_fmt": "ue8m0",
            "weight_block_size": [1, 32], "activation_scheme": "dynamic",
            "modules_to_not_convert": ["vision_tower", "multi_modal_projector",
                                       "patch_merge_mlp", "block_sparse_moe.gate",
                                       "embed_tokens", "lm_head"],
        }
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (path / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 200034, "eos_token_id": 200020, "do_sample": True,
         "temperature": 1.0, "top_p": 0.95, "top_k": 40}, indent=2) + "\n")
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "GPT2Tokenizer", "bos_token": "]~!b[", "eos_token": M3_EOS,
         "unk_token": "]!d~[", "model_max_length": 1048576, "add_prefix_space": False,
         "clean_up_tokenization_spaces": False, "chat_template": M3_CHAT_TEMPLATE},
        indent=2) + "\n")
    return path
