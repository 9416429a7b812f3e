"""How many bytes a model folder takes in memory once loaded for a compute path, from its headers.

Not the files' size: a model computes in the dtypes its loader and the compute
path give it, whatever it is stored in.

- Dequantized (the CPU default, `runtime.compute_path`): every weight becomes
  float32, 4 bytes an element, whether the source is f32, bf16, FP8 or
  quantized (an f32 reference takes as much as its files, a bf16 one twice,
  an FP8 one four times).
- Quantized kernels: MLX-quantized weights and MXFP8 ones (which mlx-lm keeps
  packed in its `mxfp8` mode) take their stored bytes; float tensors their own
  dtype's; FP8 with 128x128 block scales becomes bfloat16 (mlx-lm's loaders
  dequantize it); on the CPU a model with unquantized stacked experts is cast
  to float32 whole (`gather_mm` is float32-only there).
"""

from __future__ import annotations

import os

from studio.core.dtypes import DTYPE_BITS, FLOAT_DTYPES
from studio.core.model.inventory import Inventory, open_model

FLOAT32_BYTES = 4
BF16_BYTES = 2


def _unquantized_experts(inventory: Inventory) -> bool:
    return any(".experts." in t.name and t.encoding in ("float", "fp8") for t in inventory.tensors)


def resident_bytes(inventory: Inventory, dequantized: bool, on_cpu: bool) -> int:
    """Bytes of `inventory`'s weights in memory when computing dequantized (float32) or with the kernels."""
    cast_experts = on_cpu and _unquantized_experts(inventory)
    total = 0
    for t in inventory.tensors:
        if t.encoding == "float" and t.dtype not in FLOAT_DTYPES:
            total += t.nbytes  # integer buffers stay as stored
        elif dequantized:
            total += FLOAT32_BYTES * t.elements
        elif t.encoding in ("mlx", "mxfp8"):
            total += t.nbytes
        elif cast_experts:
            total += FLOAT32_BYTES * t.elements
        elif t.encoding == "fp8":
            total += BF16_BYTES * t.elements
        else:
            total += t.elements * DTYPE_BITS[t.dtype] // 8
    return total


def folder_resident_bytes(path: str | os.PathLike, dequantized: bool, on_cpu: bool) -> int:
    return resident_bytes(open_model(path), dequantized, on_cpu)
