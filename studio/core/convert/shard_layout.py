"""Lay out the output shards from the plan alone, before any tensor is computed.

Every tensor's name, shape, dtype and byte offset comes from
`estimate.output_tensors`, so each shard's header can be written first and
each unit's bytes written straight to their place afterwards. A unit never
straddles two shards; a unit larger than the shard limit gets a shard of its
own.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field

from studio.core.dtypes import nbytes
from studio.core.policy.estimate import output_tensors
from studio.core.policy.plan import Plan

INDEX_NAME = "model.safetensors.index.json"


@dataclass
class TensorSlot:
    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int  # absolute offset of the tensor's first byte in the shard file
    nbytes: int


@dataclass
class ShardSpec:
    filename: str
    units: list[int] = field(default_factory=list)  # indices into plan.units
    slots: list[TensorSlot] = field(default_factory=list)
    header: bytes = b""
    data_bytes: int = 0

    @property
    def file_bytes(self) -> int:
        return len(self.header) + self.data_bytes


@dataclass
class Layout:
    shards: list[ShardSpec]
    slots_by_unit: dict[int, list[TensorSlot]]
    shard_of_unit: dict[int, int]

    @property
    def data_bytes(self) -> int:
        return sum(s.data_bytes for s in self.shards)

    @property
    def file_bytes(self) -> int:
        return sum(s.file_bytes for s in self.shards)

    def digest(self) -> str:
        h = hashlib.sha256()
        for shard in self.shards:
            h.update(shard.filename.encode())
            h.update(shard.header)
        return h.hexdigest()

    def index(self) -> dict:
        weight_map = {slot.name: shard.filename for shard in self.shards for slot in shard.slots}
        return {"metadata": {"total_size": self.data_bytes}, "weight_map": dict(sorted(weight_map.items()))}


def header_bytes(entries: list[tuple[str, tuple[int, ...], str, int, int]]) -> bytes:
    """The 8-byte length plus JSON header (space-padded to 8 bytes) for (name, shape, dtype, begin, end)."""
    header: dict = {"__metadata__": {"format": "mlx"}}
    for name, shape, dtype, begin, end in entries:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def plan_layout(plan: Plan, max_shard_bytes: int) -> Layout:
    """Assign units to shards in plan order, at most `max_shard_bytes` of data each."""
    groups: list[list[tuple[int, list[tuple[str, tuple[int, ...], str]]]]] = [[]]
    size = 0
    for index, (unit, decision) in enumerate(plan.rows()):
        tensors = output_tensors(unit, decision)
        if not tensors:
            continue
        unit_size = sum(nbytes(shape, dtype) for _, shape, dtype in tensors)
        if groups[-1] and size + unit_size > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append((index, tensors))
        size += unit_size
    groups = [g for g in groups if g]
    count = len(groups)
    shards, slots_by_unit, shard_of_unit = [], {}, {}
    for number, group in enumerate(groups, 1):
        filename = "model.safetensors" if count == 1 else f"model-{number:05d}-of-{count:05d}.safetensors"
        entries, offset = [], 0
        for _, tensors in group:
            for name, shape, dtype in tensors:
                size = nbytes(shape, dtype)
                entries.append((name, tuple(shape), dtype, offset, offset + size))
                offset += size
        header = header_bytes(entries)
        spec = ShardSpec(filename, [i for i, _ in group], header=header, data_bytes=offset)
        base = len(header)
        cursor = 0
        for unit_index, tensors in group:
            unit_slots = []
            for name, shape, dtype in tensors:
                size = nbytes(shape, dtype)
                unit_slots.append(TensorSlot(name, tuple(shape), dtype, base + cursor, size))
                cursor += size
            spec.slots.extend(unit_slots)
            slots_by_unit[unit_index] = unit_slots
            shard_of_unit[unit_index] = len(shards)
        shards.append(spec)
    return Layout(shards, slots_by_unit, shard_of_unit)
