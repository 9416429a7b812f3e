"""A plan: for every unit, the concrete decision and the rule that made it."""

from __future__ import annotations

from dataclasses import dataclass

from studio.core.dtypes import DTYPE_NAMES, FLOAT_DTYPES, KEEP_DTYPES
from studio.core.policy.grid import cell_of
from studio.core.model.inventory import Inventory
from studio.core.policy.bit_policy import Drop, Keep, Policy, Quantize
from studio.core.model.unit import Unit
from studio.core.model.units import build_units


@dataclass(frozen=True, slots=True)
class Decision:
    """What happens to one unit. `dtype` is the output float dtype for kept
    tensors (a safetensors name, e.g. "BF16"); `rule` indexes the policy's rules
    (None: no rule matched); `note` says why a rule's wish was not followed."""

    action: str  # quantize | keep | drop
    bits: int = 0
    group_size: int = 0
    mode: str = ""
    dtype: str = ""
    rule: int | None = None
    note: str = ""

    def label(self) -> str:
        if self.action == "quantize":
            suffix = "" if self.mode == "affine" else f" {self.mode}"
            return f"{self.bits}-bit{suffix}"
        if self.action == "keep":
            return DTYPE_NAMES.get(self.dtype, self.dtype).replace("bfloat", "bf").replace("float", "f")
        return "drop"


def float_dtype_for(inventory: Inventory) -> str:
    """The model's float dtype: the dtype of scales, biases and kept modules.

    bf16 unless the checkpoint says f16; f32 checkpoints are written in bf16 as
    mlx-lm's convert does by default for the weights it quantizes.
    """
    torch_dtype = inventory.text_config.get("torch_dtype") or inventory.text_config.get("dtype")
    return "F16" if torch_dtype == "float16" else "BF16"


def decide(unit: Unit, action, rule: int | None, float_dtype: str) -> Decision:
    if isinstance(action, Drop):
        return Decision("drop", rule=rule)
    source_float = unit.source_dtype if unit.source_dtype in FLOAT_DTYPES else float_dtype
    if isinstance(action, Quantize):
        if unit.kind == "module" and unit.quantizable(action.group_size):
            return Decision("quantize", action.bits, action.group_size, action.mode, float_dtype, rule)
        if unit.kind == "module":
            note = f"input dimension {unit.in_features} is not divisible by group size {action.group_size}"
            return Decision("keep", dtype=float_dtype, rule=rule, note=note)
        # Plain tensors (norms, biases) cannot be quantized; they stay as they are.
        return Decision("keep", dtype=source_float, rule=rule, note="not a quantizable module")
    dtype = source_float if action.dtype == "source" else KEEP_DTYPES[action.dtype]
    if unit.source_dtype not in FLOAT_DTYPES and unit.source_dtype != "F8_E4M3" and unit.kind == "tensor":
        dtype = unit.source_dtype  # integer tensors are copied as they are
    return Decision("keep", dtype=dtype, rule=rule)


@dataclass
class Plan:
    inventory: Inventory
    units: list[Unit]
    policy: Policy
    decisions: list[Decision]
    float_dtype: str
    num_layers: int

    def rows(self):
        return zip(self.units, self.decisions)


def make_plan(inventory: Inventory, policy: Policy, units: list[Unit] | None = None) -> Plan:
    if units is None:
        units, _ = build_units(inventory)
    num_layers = int(inventory.text_config.get("num_hidden_layers") or 0)
    float_dtype = float_dtype_for(inventory)
    decisions = []
    chosen: dict[tuple, tuple] = {}  # grid cell -> (action, rule): many units share one
    for unit in units:
        cell = cell_of(unit)
        if cell not in chosen:
            chosen[cell] = policy.decide(*cell, num_layers)
        action, rule = chosen[cell]
        decisions.append(decide(unit, action, rule, float_dtype))
    return Plan(inventory, units, policy, decisions, float_dtype, num_layers)


__all__ = ["Decision", "Plan", "make_plan", "decide", "Keep", "Quantize", "Drop"]
