"""Tensor roles: names, colours and the name-based classifier, defined in one place.

Colours come from the Okabe-Ito and Paul Tol palettes, which stay distinct for
the common forms of colour blindness. Roles of one family share a hue family so
the tree and the grid read at a glance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Role:
    key: str
    label: str
    family: str
    colour: str
    quantizable: bool = True  # whether tensors of this role are ever matrices worth quantizing


ROLES: tuple[Role, ...] = (
    Role("embedding", "Embeddings", "embedding", "#56B4E9"),
    Role("lm_head", "LM head", "embedding", "#88CCEE"),
    Role("attn_q", "Attention Q", "attention", "#0072B2"),
    Role("attn_k", "Attention K", "attention", "#3A8FC9"),
    Role("attn_v", "Attention V", "attention", "#5DA5DA"),
    Role("attn_o", "Attention O", "attention", "#1F5F99"),
    Role("attn_qkv", "Attention QKV (fused)", "attention", "#2A6EBB"),
    Role("attn_q_a", "Attention Q low-rank A", "attention", "#4477AA"),
    Role("attn_q_b", "Attention Q low-rank B", "attention", "#6699CC"),
    Role("attn_kv_a", "Attention KV low-rank A", "attention", "#336699"),
    Role("attn_kv_b", "Attention KV low-rank B", "attention", "#7FA7D1"),
    Role("expert_gate", "Expert gate", "expert_gate_up", "#E69F00"),
    Role("expert_up", "Expert up", "expert_gate_up", "#F0B840"),
    Role("expert_gate_up", "Expert gate+up (fused)", "expert_gate_up", "#D4910A"),
    Role("expert_down", "Expert down", "expert_down", "#D55E00"),
    Role("shared_gate", "Shared expert gate", "shared_expert", "#CC79A7"),
    Role("shared_up", "Shared expert up", "shared_expert", "#D99BC1"),
    Role("shared_down", "Shared expert down", "shared_expert", "#AA4499"),
    Role("mlp_gate", "Dense MLP gate", "dense_mlp", "#DDCC77"),
    Role("mlp_up", "Dense MLP up", "dense_mlp", "#E8DC9A"),
    Role("mlp_down", "Dense MLP down", "dense_mlp", "#C2A83E"),
    Role("router", "Router", "router", "#009E73"),
    Role("router_bias", "Router bias", "router", "#44AA99", quantizable=False),
    Role("indexer", "Sparse-attention indexer", "indexer", "#117733"),
    Role("norm", "Norm", "norm", "#999999", quantizable=False),
    Role("vision", "Vision tower", "vision", "#882255"),
    Role("mtp", "Multi-token prediction", "mtp", "#661100"),
    Role("other", "Other", "other", "#BBBBBB"),
)

ROLE_BY_KEY = {role.key: role for role in ROLES}

# Role families in ROLES order, each named for people and drawn in its first role's colour.
FAMILY_LABELS = {
    "embedding": "Embeddings", "attention": "Attention", "expert_gate_up": "Expert gate/up",
    "expert_down": "Expert down", "shared_expert": "Shared expert", "dense_mlp": "Dense MLP",
    "router": "Router", "indexer": "Indexer", "norm": "Norms", "vision": "Vision tower",
    "mtp": "Multi-token prediction", "other": "Other",
}
FAMILY_COLOURS: dict[str, str] = {}
for _role in ROLES:
    FAMILY_COLOURS.setdefault(_role.family, _role.colour)
FAMILIES = tuple(FAMILY_COLOURS)

# The block of a layer each family belongs to, as the tensor tree groups units, in tree order.
BLOCK_OF_FAMILY = {
    "attention": "Attention", "indexer": "Sparse-attention indexer", "expert_gate_up": "MoE",
    "expert_down": "MoE", "shared_expert": "MoE", "router": "MoE", "dense_mlp": "MLP", "norm": "Norms",
    "embedding": "Embeddings", "vision": "Vision tower", "mtp": "Multi-token prediction", "other": "Other",
}
BLOCK_ORDER = ("Embeddings", "Attention", "Sparse-attention indexer", "MoE", "MLP", "Norms",
               "Multi-token prediction", "Vision tower", "Other")


def block_of(role: str) -> str:
    """The block a role's units sit in ("MoE" for experts and the router); "Other" for unknown roles."""
    return BLOCK_OF_FAMILY.get(ROLE_BY_KEY[role].family, "Other") if role in ROLE_BY_KEY else "Other"


# Named groups a policy may use instead of listing roles one by one.
ROLE_GROUPS: dict[str, tuple[str, ...]] = {
    "attention": ("attn_q", "attn_k", "attn_v", "attn_o", "attn_qkv",
                  "attn_q_a", "attn_q_b", "attn_kv_a", "attn_kv_b"),
    "mlp_gate_up": ("expert_gate", "expert_up", "expert_gate_up", "shared_gate", "shared_up",
                    "mlp_gate", "mlp_up"),
    "mlp_down": ("expert_down", "shared_down", "mlp_down"),
    "experts": ("expert_gate", "expert_up", "expert_gate_up", "expert_down"),
    "embeddings": ("embedding", "lm_head"),
}
ROLE_GROUPS["layer_matrices"] = ROLE_GROUPS["attention"] + ROLE_GROUPS["mlp_gate_up"] + ROLE_GROUPS["mlp_down"]


# A policy names one role by its key, unless a group has that name ("mlp_down" is the group of every
# down projection, expert, shared and dense): then "role:KEY" names the role alone.
ROLE_PREFIX = "role:"


def role_name(role: str) -> str:
    """How a policy names the single role `role` (the key, or "role:KEY" where a group has the key's name)."""
    return ROLE_PREFIX + role if role in ROLE_GROUPS else role


def expand_roles(names) -> frozenset[str]:
    """Role keys, "role:KEY", group names (or "*") to the set of role keys they mean."""
    keys: set[str] = set()
    for name in names:
        if name.startswith(ROLE_PREFIX) and name[len(ROLE_PREFIX):] in ROLE_BY_KEY:
            keys.add(name[len(ROLE_PREFIX):])
        elif name == "*":
            keys.update(ROLE_BY_KEY)
        elif name in ROLE_GROUPS:
            keys.update(ROLE_GROUPS[name])
        elif name in ROLE_BY_KEY:
            keys.add(name)
        else:
            raise KeyError(name)
    return frozenset(keys)


_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")
_VISION = ("vision_tower", "vision_model", "visual.", "multi_modal_projector", "patch_merge_mlp",
           "mm_projector", "vision_encoder", "image_newline")

_ATTENTION = {
    "q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_o",
    "wq": "attn_q", "wk": "attn_k", "wv": "attn_v", "wo": "attn_o", "out_proj": "attn_o",
    "qkv_proj": "attn_qkv", "query_key_value": "attn_qkv", "c_attn": "attn_qkv", "Wqkv": "attn_qkv",
    "q_a_proj": "attn_q_a", "q_b_proj": "attn_q_b", "kv_a_proj_with_mqa": "attn_kv_a",
    "kv_b_proj": "attn_kv_b", "embed_q": "attn_kv_b", "unembed_out": "attn_kv_b", "dense": "attn_o",
}
_MLP = {
    "gate_proj": "gate", "w1": "gate", "up_proj": "up", "w3": "up", "down_proj": "down", "w2": "down",
    "gate_up_proj": "gate_up", "fc1": "up", "fc2": "down", "c_fc": "up", "c_proj": "down",
}


def classify(name: str, num_layers: int | None = None) -> tuple[str, int | None]:
    """The role and layer of a tensor, from its name alone.

    Works for any architecture that names modules the Hugging Face way; the
    architecture table only adds what names cannot tell.
    """
    match = _LAYER.search(name)
    layer = int(match.group(1)) if match else None
    parts = name.split(".")
    leaf_module = parts[-2] if len(parts) > 1 else parts[-1]

    if name.startswith(_VISION) or any(f".{v}" in name for v in _VISION[:3]):
        return "vision", None
    if "mtp" in parts or (layer is not None and num_layers is not None and layer >= num_layers):
        return "mtp", layer
    if "embed_tokens" in parts or "wte" in parts or "word_embeddings" in parts or "tok_embeddings" in parts:
        return "embedding", None
    if "lm_head" in parts or name in ("output.weight",):
        return "lm_head", None
    if any(p.startswith("index_") or p == "indexer" for p in parts):
        return "indexer", layer
    if name.endswith("e_score_correction_bias") or (("router" in parts) and parts[-1] == "bias"):
        return "router_bias", layer
    if leaf_module in ("gate", "router", "shared_expert_gate") and ("mlp" in parts or "block_sparse_moe" in parts
                                                                 or "router" in parts or "feed_forward" in parts):
        return "router", layer
    if "norm" in leaf_module or leaf_module.startswith(("ln_", "layernorm")) or leaf_module.endswith("layernorm"):
        return "norm", layer
    if "experts" in parts or "switch_mlp" in parts:
        kind = "shared" if ("shared_experts" in parts or "shared_expert" in parts) else "expert"
        proj = next((_MLP[p] for p in reversed(parts) if p in _MLP), None)
        if proj:
            return f"{kind}_{proj}" if proj != "gate_up" or kind == "expert" else "shared_gate", layer
    if "shared_experts" in parts or "shared_expert" in parts:
        proj = _MLP.get(leaf_module)
        if proj in ("gate", "up", "down"):
            return f"shared_{proj}", layer
    if leaf_module in _ATTENTION and ("self_attn" in parts or "attention" in parts or "attn" in parts
                                      or leaf_module in ("q_a_proj", "q_b_proj", "kv_b_proj")):
        return _ATTENTION[leaf_module], layer
    proj = _MLP.get(leaf_module)
    if proj and layer is not None:
        return {"gate": "mlp_gate", "up": "mlp_up", "down": "mlp_down", "gate_up": "mlp_gate"}[proj], layer
    if "sinks" in parts:
        return "other", layer
    return "other", layer
