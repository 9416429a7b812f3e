"""What each architecture's mlx-lm model class does to names that roles alone cannot tell.

An architecture not listed here still opens: tensors keep their names, experts
stack under `switch_mlp`, and the inventory carries a visible warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from studio.core.model.inventory import Inventory, Tensor
from studio.core.model.unit import Unit, is_module

_W123 = {"w1": "gate_proj", "w2": "down_proj", "w3": "up_proj"}


@dataclass(frozen=True)
class Architecture:
    model_type: str
    known: bool = True
    expert_module: str = "switch_mlp"
    expert_proj: dict = field(default_factory=lambda: dict(_W123))
    renames: tuple[tuple[str, str], ...] = ()  # (source substring, output substring)
    stacks_experts: bool = True
    # Module paths (suffixes) that mlx-lm's model class holds as plain parameters,
    # not as a Linear it can quantize (DeepSeek's MoEGate router).
    unquantizable: tuple[str, ...] = ()

    def rename(self, name: str) -> str:
        for old, new in self.renames:
            name = name.replace(old, new)
        return name

    def units_for(self, tensor: Tensor, role_layer, inventory: Inventory) -> list[Unit]:
        """The unit(s) one non-expert source tensor becomes."""
        role, layer = role_layer
        name = self.rename(tensor.name)
        base, _, leaf = name.rpartition(".")
        if self.model_type == "deepseek_v3" and base.endswith(".self_attn.kv_b_proj") and leaf == "weight":
            return _split_kv_b(tensor, base, role, layer, inventory)
        if self.model_type == "gpt_oss" and base.endswith("mlp.experts") and leaf.startswith("gate_up_proj"):
            return _split_gate_up(tensor, base, leaf, role, layer)
        if self.model_type == "gpt_oss" and base.endswith("mlp.experts") and leaf.startswith("down_proj"):
            if leaf == "down_proj":
                # Hugging Face stores [E, in, out]; mlx-lm's SwitchLinear wants [E, out, in].
                shape = (tensor.shape[0], tensor.shape[2], tensor.shape[1])
                return [Unit(f"{base}.down_proj", role, layer, "module", shape, (tensor.name,), tensor.dtype,
                             "transpose")]
            return [Unit(f"{base}.down_proj.bias", role, layer, "tensor", tensor.shape, (tensor.name,),
                         tensor.dtype)]
        if is_module(role, tensor.shape, leaf) and not base.endswith(self.unquantizable or ("\0",)):
            return [Unit(base, role, layer, "module", tensor.shape, (tensor.name,), tensor.dtype)]
        return [Unit(name, role, layer, "tensor", tensor.shape, (tensor.name,), tensor.dtype)]


def _split_kv_b(tensor, base, role, layer, inventory):
    """DeepSeek-V3's sanitize turns kv_b_proj into per-head embed_q and unembed_out."""
    cfg = inventory.text_config
    heads, nope, v_dim = cfg["num_attention_heads"], cfg["qk_nope_head_dim"], cfg["v_head_dim"]
    rank = tensor.shape[1]
    owner = base.rpartition(".")[0]
    return [
        Unit(f"{owner}.embed_q", role, layer, "module", (heads, rank, nope), (tensor.name,), tensor.dtype,
             "kv_b_embed_q"),
        Unit(f"{owner}.unembed_out", role, layer, "module", (heads, v_dim, rank), (tensor.name,), tensor.dtype,
             "kv_b_unembed_out"),
    ]


def _split_gate_up(tensor, base, leaf, role, layer):
    """gpt-oss fuses gate and up, interleaved along the output dimension; mlx-lm splits them.

    Hugging Face stores the fused weight input-major, [E, hidden, 2*inter] (gate =
    [..., ::2], up = [..., 1::2]), and the bias [E, 2*inter]; each output is
    [E, inter, hidden] (the de-interleaved half, transposed) and [E, inter].
    """
    is_bias = leaf.endswith("bias")
    experts = tensor.shape[0]
    if is_bias:
        shape = (experts, tensor.shape[-1] // 2)
    else:
        shape = (experts, tensor.shape[2] // 2, tensor.shape[1])
    out = []
    for proj, transform, out_role in (("gate_proj", "split_gate", "expert_gate"), ("up_proj", "split_up", "expert_up")):
        path = f"{base}.{proj}" + (".bias" if is_bias else "")
        out.append(Unit(path, out_role, layer, "tensor" if is_bias else "module", shape, (tensor.name,),
                        tensor.dtype, transform))
    return out


ARCHITECTURES = {
    "minimax_m3_vl": Architecture("minimax_m3_vl"),
    "minimax": Architecture("minimax"),
    "minimax_m2": Architecture("minimax_m2"),  # the Hub's name for MiniMax-M2.x; mlx-lm maps it to minimax
    "mixtral": Architecture("mixtral"),
    "qwen3_moe": Architecture("qwen3_moe", expert_proj={}),
    "qwen2_moe": Architecture("qwen2_moe", expert_proj={}),
    "deepseek_v3": Architecture("deepseek_v3", expert_proj={}, unquantizable=("mlp.gate",)),
    "deepseek_v2": Architecture("deepseek_v2", expert_proj={}, unquantizable=("mlp.gate",)),
    "gpt_oss": Architecture("gpt_oss", expert_module="experts", expert_proj={}, stacks_experts=False),
    "llama": Architecture("llama"),
    "qwen3": Architecture("qwen3"),
    "qwen2": Architecture("qwen2"),
    "mistral": Architecture("mistral"),
}


def architecture_for(inventory: Inventory) -> Architecture:
    model_type = inventory.model_type
    arch = ARCHITECTURES.get(model_type)
    if arch is None:
        warning = (
            f"Architecture {model_type or '(none)'!r} is not one Config-I Studio knows; roles come from "
            "tensor names alone and the output may need checking with mlx-lm."
        )
        if warning not in inventory.warnings:
            inventory.warnings.append(warning)
        arch = Architecture(model_type or "unknown", known=False)
    return arch
