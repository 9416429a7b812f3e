"""One safetensors header entry and one tensor name, checked before any arithmetic on them."""

from __future__ import annotations

from studio.core.dtypes import DTYPE_BITS
from studio.core.errors import StudioError
from studio.core.validation.fields import shown

MAX_NAME = 1024
MAX_DIMS = 8
MAX_ENTRIES = 1_000_000  # M3 has 45,700 header entries in all its shards
_BAD_NAME_CHARS = ("\0", "/", "\\")


def check_tensor_name(name, where: str) -> str:
    """Names become file-format keys and module paths: printable, bounded, no separators or NUL."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME or any(c in name for c in _BAD_NAME_CHARS) \
            or not name.isprintable() or name.startswith(".") or name.endswith(".") or ".." in name:
        raise StudioError(f"{where}: tensor name {shown(name)} is not a valid tensor name.")
    return name


def check_entry(name: str, entry, where: str) -> tuple[str, tuple[int, ...], int, int, int]:
    """(dtype, shape, begin, end, bytes needed) of one header entry, or one sentence."""
    check_tensor_name(name, where)
    if not isinstance(entry, dict):
        raise StudioError(f"{where}: tensor {name!r} has a malformed header entry.")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise StudioError(f"{where}: tensor {name!r} has unknown dtype {shown(dtype)}.")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or \
            not all(type(d) is int and 0 <= d < 2**48 for d in shape):
        raise StudioError(f"{where}: tensor {name!r} has an invalid shape {shown(shape)}.")
    if not isinstance(offsets, list) or len(offsets) != 2 or \
            not all(type(o) is int and 0 <= o < 2**63 for o in offsets) or offsets[1] < offsets[0]:
        raise StudioError(f"{where}: tensor {name!r} has invalid data_offsets {shown(offsets)}.")
    count = 1
    for d in shape:
        count *= d
    needed = count * DTYPE_BITS[dtype] // 8
    begin, end = offsets
    if end - begin != needed:
        raise StudioError(f"{where}: tensor {name!r} spans {end - begin:,} bytes but its shape and dtype "
                          f"need {needed:,}.")
    return dtype, tuple(shape), begin, end, needed
