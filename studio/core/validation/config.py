"""Every field of config.json the studio reads, checked by type and range in one place.

The checks run once, when a model folder is opened, before any arithmetic on
the values; the rest of the code may then trust `inventory.text_config`.
Ranges are far wider than any real model's (MiniMax-M3: 60 layers, hidden
6144, vocabulary 200,064, 128 experts) but narrow enough that no product or
allocation can explode.
"""

from __future__ import annotations

from studio.core.defaults import MODES
from studio.core.errors import StudioError
from studio.core.validation.fields import mapping, one_of, shown, text, whole

MAX_LAYERS = 4096
MAX_WIDTH = 2**20         # hidden sizes, intermediate sizes, ranks
MAX_HEADS = 2**14
MAX_VOCAB = 2**24
MAX_EXPERTS = 2**16

# Optional whole-number fields: (lowest, highest). None (JSON null) counts as absent.
_WHOLE_FIELDS = {
    "hidden_size": (1, MAX_WIDTH),
    "intermediate_size": (1, MAX_WIDTH),
    "moe_intermediate_size": (1, MAX_WIDTH),
    "num_attention_heads": (1, MAX_HEADS),
    "num_key_value_heads": (1, MAX_HEADS),
    "head_dim": (1, MAX_WIDTH),
    "vocab_size": (1, MAX_VOCAB),
    "kv_lora_rank": (1, MAX_WIDTH),
    "q_lora_rank": (1, MAX_WIDTH),
    "qk_rope_head_dim": (0, MAX_WIDTH),
    "qk_nope_head_dim": (0, MAX_WIDTH),
    "v_head_dim": (1, MAX_WIDTH),
    "num_local_experts": (1, MAX_EXPERTS),
    "n_routed_experts": (1, MAX_EXPERTS),
    "num_experts": (1, MAX_EXPERTS),
    "num_experts_per_tok": (1, MAX_EXPERTS),
    "first_k_dense_replace": (0, MAX_LAYERS),
}

# Fields an architecture cannot be converted without (DeepSeek's kv_b split needs its head dims).
REQUIRED_FIELDS = {
    "deepseek_v3": ("num_attention_heads", "qk_nope_head_dim", "v_head_dim", "kv_lora_rank"),
    "deepseek_v2": ("num_attention_heads", "qk_nope_head_dim", "v_head_dim", "kv_lora_rank"),
}



def _quant_settings(value, where: str, modes: dict, *, need_bits: bool) -> None:
    value = mapping(value, where)
    mode = value.get("mode", "affine")
    one_of(mode, f"{where} mode", tuple(modes))
    if "bits" in value or need_bits:
        whole(value.get("bits"), f"{where} bits", 1, 8)
    if "group_size" in value:
        whole(value.get("group_size"), f"{where} group_size", 1, 1024)


def check_quantization(value, where: str) -> None:
    """An MLX `"quantization"` entry: defaults plus per-module dicts or booleans."""
    value = mapping(value, where)
    _quant_settings({k: value[k] for k in ("bits", "group_size", "mode") if k in value}, where, MODES,
                    need_bits=False)
    for key, entry in value.items():
        if key in ("bits", "group_size", "mode"):
            continue
        if isinstance(entry, bool):
            continue
        if isinstance(entry, dict):
            _quant_settings(entry, f"{where} entry {shown(key, 80)}", MODES, need_bits=False)
            continue
        if key in ("quant_method", "linear_class", "quantization_mode"):  # written by some tools; unused here
            continue
        raise StudioError(f"{where} entry {shown(key, 80)} must be an object or true/false, not {shown(entry)}.")


def check_source_quantization(value, where: str) -> None:
    """A Hugging Face `"quantization_config"` (FP8 / MXFP8 checkpoints)."""
    value = mapping(value, where)
    if "quant_method" in value:
        text(value["quant_method"], f"{where} quant_method", 64)
    block = value.get("weight_block_size")
    if block is not None:
        if not isinstance(block, list) or len(block) != 2:
            raise StudioError(f"{where} weight_block_size must be two whole numbers, not {shown(block)}.")
        for n in block:
            whole(n, f"{where} weight_block_size", 1, 4096)


def _check_text_fields(cfg: dict, where: str) -> None:
    if "num_hidden_layers" not in cfg or cfg["num_hidden_layers"] is None:
        raise StudioError(f"{where} has no num_hidden_layers; the studio needs the layer count.")
    whole(cfg["num_hidden_layers"], f"{where} num_hidden_layers", 1, MAX_LAYERS)
    for name, (lo, hi) in _WHOLE_FIELDS.items():
        if cfg.get(name) is not None:
            whole(cfg[name], f"{where} {name}", lo, hi)
    heads, kv_heads = cfg.get("num_attention_heads"), cfg.get("num_key_value_heads")
    if heads and kv_heads and kv_heads > heads:
        raise StudioError(f"{where} has more key/value heads ({kv_heads}) than attention heads ({heads}).")
    for name in ("torch_dtype", "dtype"):
        if cfg.get(name) is not None and not isinstance(cfg[name], str):
            raise StudioError(f"{where} {name} must be a dtype name, not {shown(cfg[name])}.")
    if cfg.get("tie_word_embeddings") is not None and not isinstance(cfg["tie_word_embeddings"], bool):
        raise StudioError(f"{where} tie_word_embeddings must be true or false, not {shown(cfg['tie_word_embeddings'])}.")


def check_config(config, where: str = "config.json") -> None:
    """Refuse, in one sentence, any field the studio reads that has the wrong type or an absurd value."""
    config = mapping(config, where)
    if "model_type" in config:
        text(config["model_type"], f"{where} model_type", 100)
    architectures = config.get("architectures")
    if architectures is not None and not (isinstance(architectures, (list, str))
                                          and all(isinstance(a, str) for a in architectures)):
        raise StudioError(f"{where} architectures must be a list of names, not {shown(architectures)}.")
    text_config = config.get("text_config")
    if text_config is not None:
        mapping(text_config, f"{where} text_config")
        if "model_type" in text_config:
            text(text_config["model_type"], f"{where} text_config model_type", 100)
    merged = {**config, **(text_config or {})}
    _check_text_fields(merged, where)
    model_type = config.get("model_type", "")
    for name in REQUIRED_FIELDS.get(model_type, ()):
        if merged.get(name) is None:
            raise StudioError(f"{where} has no {name}, which a {model_type} model needs.")
    for holder, label in ((config, where), (text_config or {}, f"{where} text_config")):
        if holder.get("quantization") is not None:
            check_quantization(holder["quantization"], f"{label} quantization")
        if holder.get("quantization_config") is not None:
            check_source_quantization(holder["quantization_config"], f"{label} quantization_config")
    if "model_file" in config:
        raise StudioError(f"{where} asks to run the model's own code ({shown(config['model_file'])}); "
                          "the studio does not run code from a model folder.")
