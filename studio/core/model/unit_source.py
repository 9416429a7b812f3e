"""The float values of any rows of one unit, the way the converter sees them.

`read_unit_rows` fetches the source bytes of output rows [first, stop) of a
unit (rows of a 2-D weight, experts of a stacked or 3-D one) and `unit_values`
dequantizes them and applies the unit's transform (stack, transpose, split,
kv_b). The converter and the error survey both go through here, so a survey
measures exactly the values a conversion would quantize.
"""

from __future__ import annotations

from studio.core.model.dequantize import SourceReader, SourceRows, dequantize, read_rows
from studio.core.model.inventory import Inventory
from studio.core.model.unit import Unit


def whole_only(unit: Unit) -> bool:
    """Units whose transform needs the whole source at once (kv_b splits, plain 0-D/1-D tensors)."""
    return unit.transform.startswith("kv_b") or len(unit.shape) < 2


def read_unit_rows(reader: SourceReader, inventory: Inventory, unit: Unit, first: int, stop: int,
                   rows_per_source: int | None = None) -> list[SourceRows]:
    """Source rows behind output rows [first, stop) of `unit`.

    For a stacked unit the output rows are experts, one source tensor each;
    `rows_per_source` then reads only each expert's first rows (a sample: the
    quantization groups run along the last axis, so any row subset quantizes
    exactly as it does inside the whole).
    """
    by_name = inventory.by_name
    if unit.transform == "stack":
        return [read_rows(reader, by_name[n], 0, rows_per_source) for n in unit.sources[first:stop]]
    source = by_name[unit.sources[0]]
    if whole_only(unit) or len(source.shape) < 2:
        return [read_rows(reader, source)]
    return [read_rows(reader, source, first, stop)]


def transform(unit: Unit, values: list):
    """The output rows of `unit` from its dequantized source rows."""
    import mlx.core as mx

    t = unit.transform
    if t == "stack":
        return mx.stack(values)
    x = values[0]
    if t == "copy":
        return x
    if t == "transpose":
        return x.swapaxes(-1, -2)
    if t in ("split_gate", "split_up"):
        x = x[..., 0::2] if t == "split_gate" else x[..., 1::2]
        return x.swapaxes(-1, -2) if x.ndim == 3 else x
    if t == "kv_b_embed_q":
        heads, rank, nope = unit.shape
        return x.reshape(heads, -1, rank)[:, :nope, :].swapaxes(-1, -2)
    if t == "kv_b_unembed_out":
        heads, v_dim, rank = unit.shape
        v = x.reshape(heads, -1, rank)
        return v[:, v.shape[1] - v_dim:, :]
    raise ValueError(f"unknown transform {t!r}")


def unit_values(unit: Unit, parts: list[SourceRows]):
    """Dequantize and transform: the exact float values (MLX, lazy) of the rows read."""
    return transform(unit, [dequantize(p) for p in parts])
