"""Exact output size of a plan: the bytes the converter writes, to the byte.

`output_tensors` is the single source of truth for what a unit becomes on
disk; the converter builds its safetensors headers from the same function, so
the estimate cannot drift from the output.

Sizes for N elements quantized in groups of gs along the input dimension:
- affine: packed uint32 weight (N*bits/8 bytes) plus scales and biases in the
  model's float dtype, (N/gs) values each.
- mxfp4, mxfp8: one uint8 scale per 32 values, no biases; nvfp4: one per 16.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from studio.core.dtypes import nbytes
from studio.core.policy.plan import Decision, Plan
from studio.core.model.unit import Unit


def output_tensors(unit: Unit, decision: Decision) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, safetensors dtype) of every tensor this unit writes."""
    if decision.action == "drop":
        return []
    if decision.action == "keep":
        return [(unit.weight_name, unit.shape, decision.dtype)]
    *lead, inputs = unit.shape
    packed = (*lead, inputs * decision.bits // 32)
    groups = (*lead, inputs // decision.group_size)
    tensors = [(f"{unit.path}.weight", packed, "U32")]
    if decision.mode == "affine":
        tensors += [(f"{unit.path}.scales", groups, decision.dtype), (f"{unit.path}.biases", groups, decision.dtype)]
    else:
        tensors.append((f"{unit.path}.scales", groups, "U8"))
    return tensors


def unit_bytes(unit: Unit, decision: Decision) -> int:
    return sum(nbytes(shape, dtype) for _, shape, dtype in output_tensors(unit, decision))


@dataclass
class Estimate:
    total_bytes: int
    source_bytes: int
    quantized_bytes: int
    quantized_elements: int
    total_elements: int
    unit_bytes: list[int]
    by_role: dict[str, int] = field(default_factory=dict)
    by_role_source: dict[str, int] = field(default_factory=dict)
    by_layer: dict[int | None, int] = field(default_factory=dict)
    by_action: dict[str, int] = field(default_factory=dict)

    @property
    def bpw_quantized(self) -> float:
        """Bits per weight over the quantized weights only (the figure model cards quote)."""
        return 8 * self.quantized_bytes / self.quantized_elements if self.quantized_elements else 0.0

    @property
    def bpw_output(self) -> float:
        """Bits per weight over the whole output: all bytes written over all logical parameters written.

        Not quite mlx-lm's `compute_bits_per_weight`, which measures the model its loader
        builds: it leaves out what the loader drops (the vision tower of a VL checkpoint,
        which the output keeps), and it counts arrays held outside leaf modules (a routing
        bias, attention sinks, rope buffers) in bytes but not in parameters, which moves
        the 4th-5th significant digit. Over the units mlx-lm loads, the two agree within 0.05%
        (tests/test_convert.py compares them on loaded outputs).
        """
        return 8 * self.total_bytes / self.total_elements if self.total_elements else 0.0

    @property
    def total_gb(self) -> float:
        return self.total_bytes / 1e9

    def to_dict(self) -> dict:
        return {
            "total_bytes": self.total_bytes,
            "total_gb": round(self.total_gb, 3),
            "source_bytes": self.source_bytes,
            "bpw_quantized": round(self.bpw_quantized, 4),
            "bpw_output": round(self.bpw_output, 4),
            "quantized_bytes": self.quantized_bytes,
            "quantized_elements": self.quantized_elements,
            "total_elements": self.total_elements,
            "by_role": dict(self.by_role),
            "by_role_source": dict(self.by_role_source),
            "by_layer": {("none" if k is None else str(k)): v for k, v in self.by_layer.items()},
            "by_action": dict(self.by_action),
        }


class SourceSizes:
    """Per-unit source bytes, computed once per inventory (they never change with the policy).

    A source tensor read by several units (DeepSeek's kv_b_proj becomes embed_q and
    unembed_out; gpt-oss's fused gate_up becomes gate and up) is shared out evenly
    among them, so every source byte is counted once and the units' bytes sum to
    the checkpoint's.
    """

    def __init__(self, plan: Plan):
        by_name = plan.inventory.by_name
        readers: dict[str, list[int]] = defaultdict(list)
        for index, unit in enumerate(plan.units):
            for name in unit.sources:
                readers[name].append(index)
        self.unit_source = [0] * len(plan.units)
        for name, indices in readers.items():
            share, rest = divmod(by_name[name].nbytes, len(indices))
            for k, index in enumerate(indices):
                self.unit_source[index] += share + (1 if k < rest else 0)


def estimate(plan: Plan, sources: SourceSizes | None = None) -> Estimate:
    sources = sources or SourceSizes(plan)
    by_role: dict[str, int] = defaultdict(int)
    by_role_source: dict[str, int] = defaultdict(int)
    by_layer: dict[int | None, int] = defaultdict(int)
    by_action: dict[str, int] = defaultdict(int)
    sizes = []
    total = q_bytes = q_elems = elements = 0
    memo: dict[tuple, int] = {}  # the 57 MoE layers of M3 repeat the same few shapes
    for (unit, decision), src in zip(plan.rows(), sources.unit_source):
        key = (unit.shape, unit.kind, decision.action, decision.bits, decision.group_size, decision.mode,
               decision.dtype)
        size = memo.get(key)
        if size is None:
            size = memo[key] = unit_bytes(unit, decision)
        sizes.append(size)
        total += size
        by_role[unit.role] += size
        by_role_source[unit.role] += src
        by_layer[unit.layer] += size
        by_action[decision.action] += size
        if decision.action != "drop":
            elements += unit.elements
        if decision.action == "quantize":
            q_bytes += size
            q_elems += unit.elements
    return Estimate(total, sum(sources.unit_source), q_bytes, q_elems, elements, sizes,
                    dict(by_role), dict(by_role_source), dict(by_layer), dict(by_action))
