"""Safetensors dtype names and their sizes, in one table."""

import math

# Bits per element of every dtype a safetensors header may name.
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64,
}

FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
FP8_DTYPES = {"F8_E4M3", "F8_E5M2"}

# The float dtypes a user can keep a tensor in, by the names policies use.
KEEP_DTYPES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}
DTYPE_NAMES = {v: k for k, v in KEEP_DTYPES.items()}


def nbytes(shape, dtype: str) -> int:
    return math.prod(shape) * DTYPE_BITS[dtype] // 8
