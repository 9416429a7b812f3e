"""The compute step: one chunk's source rows in, the bytes of its output tensors out.

`quantize_weight(x, decision)` is the seam a different quantizer plugs into:
it takes a unit's float values (any rows of it) and returns the output tensors
MLX stores for it (packed weight, scales[, biases]). Everything else here is
bookkeeping around it: kept units are cast (or copied byte for byte), and
every ERROR_ROW_STRIDE-th row of a quantized chunk is dequantized again to
measure the relative error that `quant_errors.json` records.
"""

from __future__ import annotations

import numpy as np

from studio.core.convert.chunks import Chunk, rows
from studio.core.model.dequantize import SourceRows
from studio.core.policy.plan import Decision, Plan
from studio.core.quant_error.round_trip import round_trip_sums
from studio.core.model.unit_source import unit_values
from studio.core.model.unit import Unit

ERROR_ROW_STRIDE = 8  # quant_errors.json measures every 8th output row of each matrix


def mx_dtype(name: str):
    import mlx.core as mx

    return {"BF16": mx.bfloat16, "F16": mx.float16, "F32": mx.float32}[name]


def quantize_weight(x, decision: Decision) -> list:
    """The output tensors (MLX arrays, lazy) of float values `x` under a quantize decision:
    [packed weight, scales] plus biases for affine, in the order the layout's slots list them."""
    import mlx.core as mx

    return list(mx.quantize(x.astype(mx_dtype(decision.dtype)), decision.group_size, decision.bits,
                            mode=decision.mode))


def raw_copy(unit: Unit, decision: Decision, plan: Plan) -> bool:
    """A kept unit whose bytes are the source's bytes: copied without MLX."""
    if decision.action != "keep" or unit.transform not in ("copy", "stack"):
        return False
    sources = [plan.inventory.by_name[n] for n in unit.sources]
    return all(s.encoding == "float" and s.dtype == decision.dtype for s in sources)


def to_numpy(array) -> np.ndarray:
    """An MLX array's bytes as a C-contiguous numpy array (bfloat16 seen as its bits)."""
    import mlx.core as mx

    array = mx.contiguous(array)
    size = array.dtype.size
    as_uint = {1: mx.uint8, 2: mx.uint16, 4: mx.uint32, 8: mx.uint64}[size]
    if array.dtype != as_uint:
        array = array.view(as_uint)
    return np.ascontiguousarray(np.asarray(array))


def compute_chunk(plan: Plan, chunk: Chunk, parts: list[SourceRows], slots, measure: bool = True,
                  quantizer=None) -> tuple[list[list[np.ndarray]], tuple[float, float] | None]:
    """The bytes of each of the unit's output tensors for the chunk's rows, in slot order,
    and for a quantized chunk (when `measure`) its (squared error, squares) sums.

    `quantizer(x, unit, decision, first, stop)`, when given, replaces `quantize_weight`
    (it must return the same tensors: see studio.core.calibration.convert_hook)."""
    unit, decision = plan.units[chunk.unit_index], plan.decisions[chunk.unit_index]
    if raw_copy(unit, decision, plan):
        return [[np.ascontiguousarray(p.data) for p in parts]], None
    import mlx.core as mx

    x = unit_values(unit, parts)
    sums = []
    if decision.action == "quantize":
        outs = quantize_weight(x, decision) if quantizer is None else \
            quantizer(x, unit, decision, chunk.first, chunk.stop)
        if measure:
            # Every ERROR_ROW_STRIDE-th output row (counted across the whole unit, so any
            # chunking samples the same rows): dequantizing costs about twice what
            # quantizing does on the CPU, and a strided sample of thousands of rows
            # estimates a tensor's relative error to well under a percent.
            # Per row in float32, then float64 across rows.
            offset = (-chunk.first) % ERROR_ROW_STRIDE if x.ndim == 2 else 0
            if offset < x.shape[-2]:  # a short chunk may hold no sampled row
                sample = [a[..., offset::ERROR_ROW_STRIDE, :] for a in (x, *outs)]
                sums = list(round_trip_sums(sample[0], sample[1:], decision.bits, decision.group_size,
                                            decision.mode, axes=(-1,)))
    else:
        outs = [x.astype(mx_dtype(decision.dtype))]
    mx.eval(outs + sums)
    arrays = [to_numpy(o) for o in outs]
    error = (float(np.sum(np.asarray(sums[0], dtype=np.float64))),
             float(np.sum(np.asarray(sums[1], dtype=np.float64)))) if sums else None
    del x, outs, sums
    count = chunk.stop - chunk.first
    for slot, array in zip(slots, arrays):
        expected = slot.nbytes * count // rows(slot.shape)
        if array.nbytes != expected:
            raise RuntimeError(f"{slot.name}: computed {array.nbytes} bytes for rows {chunk.first}-{chunk.stop}, "
                               f"the layout expects {expected}")
    return [[a] for a in arrays], error


def clear_cache() -> None:
    import mlx.core as mx

    mx.clear_cache()
