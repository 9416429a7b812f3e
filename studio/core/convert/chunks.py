"""Cut a plan's units into chunks of rows: the pieces the pipeline reads, computes and writes.

A chunk is a slice of rows (experts, for stacked units) of one unit;
quantization groups run along the last axis, so a chunk's bytes are exactly
the rows' bytes of the whole.
"""

from __future__ import annotations

from dataclasses import dataclass

from studio.core.model.dequantize import FP8_BLOCK
from studio.core.policy.plan import Plan
from studio.core.convert.shard_layout import Layout
from studio.core.model.unit_source import whole_only

# Values per chunk: about 64 MB as float32. Small enough that every chunk is a
# short piece of GPU work on Metal and memory stays flat; big enough that the
# per-chunk overhead does not show.
CHUNK_ELEMENTS = 16 * 2**20


@dataclass
class Chunk:
    unit_index: int
    first: int  # rows [first, stop) along the output's first axis
    stop: int
    last: bool  # the unit's last chunk
    closes_shard: int | None = None  # the shard this chunk finishes, if any


def rows(shape: tuple[int, ...]) -> int:
    """Rows along the first axis as the converter counts them (a 0-D/1-D tensor is one row)."""
    return shape[0] if len(shape) >= 2 else 1


def unit_spans(plan: Plan, index: int, chunk_elements: int | None = None) -> list[tuple[int, int]]:
    """The [first, stop) row spans of unit `index`, about `chunk_elements` values each."""
    chunk_elements = CHUNK_ELEMENTS if chunk_elements is None else chunk_elements
    unit = plan.units[index]
    if whole_only(unit):
        return [(0, rows(unit.shape))]
    count = unit.shape[0]
    per_row = max(1, unit.elements // max(count, 1))
    step = max(1, chunk_elements // per_row)
    source = plan.inventory.by_name[unit.sources[0]]
    if unit.transform == "copy" and source.encoding == "fp8" and source.companions:
        step = max(FP8_BLOCK, step // FP8_BLOCK * FP8_BLOCK)  # block scales cover 128 rows
    return [(a, min(count, a + step)) for a in range(0, count, step)]


def work_list(plan: Plan, layout: Layout, skip_shards: set[int], chunk_elements: int | None = None) -> list[Chunk]:
    """Every chunk of every shard not in `skip_shards`, in shard order; each shard's last
    chunk says it closes that shard."""
    work: list[Chunk] = []
    for shard_index, shard in enumerate(layout.shards):
        if shard_index in skip_shards:
            continue
        for unit_index in shard.units:
            spans = unit_spans(plan, unit_index, chunk_elements)
            for n, (a, b) in enumerate(spans):
                work.append(Chunk(unit_index, a, b, n == len(spans) - 1))
        work[-1].closes_shard = shard_index
    return work
