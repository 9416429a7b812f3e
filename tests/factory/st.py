"""Safetensors writing and reading by hand, plus the FP8 codecs the factories need.

Why by hand: safetensors' numpy API has neither bfloat16 nor F8_E4M3 (numpy
has no such dtypes), and the header-only replica needs headers with no data
behind them. The format is small: an 8-byte little-endian header length, a
JSON header (padded with spaces to a multiple of 8 bytes, as the Rust writer
does), then the raw little-endian tensor bytes in header order.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Bytes per element of the dtypes this module writes and reads.
ITEMSIZE = {"BF16": 2, "F16": 2, "F32": 4, "F8_E4M3": 1, "U8": 1}


@dataclass
class Tensor:
    """One tensor as it will sit on disk: safetensors dtype, shape, raw bytes.

    `data` is None for header-only files (the replica).
    """

    dtype: str
    shape: tuple[int, ...]
    data: bytes | None = None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * ITEMSIZE[self.dtype]


# --------------------------------------------------------------------------- floats


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even, as torch does."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    return ((bits + rounding) >> 16).astype(np.uint16)


def from_bf16_bits(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(np.float32)


def float_tensor(x: np.ndarray, dtype: str) -> Tensor:
    """Store float32 values as BF16, F16 or F32."""
    if dtype == "BF16":
        raw = to_bf16_bits(x).tobytes()
    elif dtype == "F16":
        raw = np.asarray(x, dtype=np.float32).astype("<f2").tobytes()
    elif dtype == "F32":
        raw = np.asarray(x, dtype="<f4").tobytes()
    else:
        raise ValueError(f"not a float dtype: {dtype}")
    return Tensor(dtype, tuple(x.shape), raw)


# --------------------------------------------------------------------------- FP8 e4m3


def _e4m3_table() -> np.ndarray:
    """The float32 value of each of the 256 OCP e4m3fn codes (0x7F/0xFF are NaN)."""
    codes = np.arange(256)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exp = (codes >> 3) & 0xF
    man = codes & 0x7
    # Subnormals (exp 0) are man/8 * 2^-6; normals are (1 + man/8) * 2^(exp-7).
    vals = np.where(exp == 0, man / 8.0 * 2.0**-6, (1 + man / 8.0) * 2.0 ** (exp - 7.0))
    vals = sign * vals
    vals[(exp == 15) & (man == 7)] = np.nan
    return vals.astype(np.float32)


E4M3_TABLE = _e4m3_table()
E4M3_MAX = 448.0
# The non-negative finite codes 0x00..0x7E; their values rise with the code.
_POS_VALUES = E4M3_TABLE[:0x7F].astype(np.float64)


def encode_e4m3(x: np.ndarray) -> np.ndarray:
    """float -> e4m3fn codes (uint8): round to nearest, ties to even, saturate at +-448.

    Done by search over the 127 non-negative values rather than bit tricks, so
    subnormals and the saturation edge are right by construction. Ties go to
    the even code, whose mantissa LSB is 0, as IEEE rounding does.
    """
    x = np.asarray(x, dtype=np.float64)
    mag = np.minimum(np.abs(x), E4M3_MAX)
    hi = np.clip(np.searchsorted(_POS_VALUES, mag, side="left"), 1, 0x7E)
    lo = hi - 1
    d_lo = mag - _POS_VALUES[lo]
    d_hi = _POS_VALUES[hi] - mag
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (hi % 2 == 0))
    code = np.where(pick_hi, hi, lo).astype(np.uint8)
    # The sign bit is kept even when the magnitude rounds to zero (-0 is 0x80),
    # as torch's and MLX's casts do.
    return np.where(np.signbit(x), code | 0x80, code).astype(np.uint8)


def decode_e4m3(codes: np.ndarray) -> np.ndarray:
    return E4M3_TABLE[np.asarray(codes, dtype=np.uint8)]


def fp8_block_quantize(w: np.ndarray, block: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """DeepSeek-V3 / MiniMax-M2 FP8: e4m3 codes plus F32 `weight_scale_inv` per 128x128 block.

    weight = fp8 * scale_inv[row // 128, col // 128]. Edge blocks may be partial
    (the scale shape is [ceil(out/128), ceil(in/128)]).
    """
    out, inp = w.shape
    rb, cb = math.ceil(out / block), math.ceil(inp / block)
    scale = np.empty((rb, cb), dtype=np.float32)
    for i in range(rb):
        for j in range(cb):
            blk = w[i * block:(i + 1) * block, j * block:(j + 1) * block]
            amax = float(np.abs(blk).max())
            scale[i, j] = np.float32(amax / E4M3_MAX if amax > 0 else 1.0)
    full = np.repeat(np.repeat(scale, block, 0), block, 1)[:out, :inp]
    return encode_e4m3(w / full), scale


def fp8_block_dequantize(codes: np.ndarray, scale: np.ndarray, block: int = 128) -> np.ndarray:
    out, inp = codes.shape
    full = np.repeat(np.repeat(scale.astype(np.float32), block, 0), block, 1)[:out, :inp]
    return decode_e4m3(codes) * full


def mxfp8_quantize(w: np.ndarray, group: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """OCP MXFP8: e4m3 codes plus one E8M0 exponent (uint8, scale 2^(e-127)) per 32 inputs.

    The shared exponent is the smallest power of two that brings the group's
    largest magnitude to <= 448: e = ceil(log2(amax / 448)). This is the rule
    mx.quantize(mode="mxfp8") uses, so our codes equal MLX's and nothing
    saturates (the OCP spec's floor(log2(amax)) - 8 would clip up to 511 -> 448).
    """
    out, inp = w.shape
    assert inp % group == 0, "MXFP8 needs the input dim divisible by 32"
    g = w.reshape(out, inp // group, group).astype(np.float64)
    amax = np.abs(g).max(axis=-1)
    safe = np.where(amax > 0, amax, 1.0)
    e = np.where(amax > 0, np.ceil(np.log2(safe / E4M3_MAX)), -127)
    e = np.clip(e, -127, 127).astype(np.int32)
    codes = encode_e4m3(g / np.exp2(e)[..., None]).reshape(out, inp)
    return codes, (e + 127).astype(np.uint8)


def mxfp8_dequantize(codes: np.ndarray, exps: np.ndarray, group: int = 32) -> np.ndarray:
    out, inp = codes.shape
    scale = np.exp2(exps.astype(np.float32) - 127.0)
    return (decode_e4m3(codes).reshape(out, inp // group, group) * scale[..., None]).reshape(out, inp)


# --------------------------------------------------------------------------- files


def header_bytes(tensors: dict[str, Tensor], metadata: dict | None = None) -> tuple[bytes, int]:
    """The length prefix + padded JSON header; also the data region's length."""
    header: dict = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, t in tensors.items():
        header[name] = {"dtype": t.dtype, "shape": list(t.shape),
                        "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, offset


def write_file(path: Path, tensors: dict[str, Tensor], *, header_only: bool = False) -> int:
    """Write one safetensors file; return its data bytes.

    header_only: the data region becomes a sparse hole (truncate), so a
    multi-gigabyte shard costs no disk and no time, yet its size and offsets
    are those of the real file.
    """
    head, data_len = header_bytes(tensors)
    with open(path, "wb") as f:
        f.write(head)
        if header_only:
            f.truncate(len(head) + data_len)
        else:
            for name, t in tensors.items():
                assert t.data is not None and len(t.data) == t.nbytes, name
                f.write(t.data)
    return data_len


def write_sharded(folder: Path, tensors: dict[str, Tensor], shards: int,
                  *, header_only: bool = False) -> list[Path]:
    """Write `model.safetensors` (shards == 1) or `model-0000k-of-0000n.safetensors`
    plus `model.safetensors.index.json`, splitting in the given (model) order by bytes,
    as Hugging Face's save_pretrained does with max_shard_size."""
    folder.mkdir(parents=True, exist_ok=True)
    if shards == 1:
        path = folder / "model.safetensors"
        write_file(path, tensors, header_only=header_only)
        return [path]
    total = sum(t.nbytes for t in tensors.values())
    groups: list[dict[str, Tensor]] = [{} for _ in range(shards)]
    start = 0
    for name, t in tensors.items():
        # A tensor goes to the shard its first byte falls in; with tensors much
        # smaller than a shard this yields exactly `shards` non-empty files.
        groups[min(shards - 1, start * shards // max(total, 1))][name] = t
        start += t.nbytes
    groups = [g for g in groups if g]
    n = len(groups)
    weight_map, paths = {}, []
    for k, group in enumerate(groups, 1):
        fname = f"model-{k:05d}-of-{n:05d}.safetensors"
        write_file(folder / fname, group, header_only=header_only)
        weight_map.update({name: fname for name in group})
        paths.append(folder / fname)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return paths


def read_header(path: Path) -> dict:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header


def read_file(path: Path) -> dict[str, tuple[str, np.ndarray]]:
    """name -> (safetensors dtype, array). BF16 comes back as float32, F8 as uint8 codes."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            b, e = info["data_offsets"]
            f.seek(base + b)
            raw = f.read(e - b)
            dtype, shape = info["dtype"], tuple(info["shape"])
            if dtype == "BF16":
                arr = from_bf16_bits(np.frombuffer(raw, "<u2"))
            elif dtype == "F16":
                arr = np.frombuffer(raw, "<f2").astype(np.float32)
            elif dtype == "F32":
                arr = np.frombuffer(raw, "<f4").copy()
            elif dtype in ("F8_E4M3", "U8"):
                arr = np.frombuffer(raw, np.uint8).copy()
            else:
                raise ValueError(f"{name}: dtype {dtype} not handled")
            out[name] = (dtype, arr.reshape(shape))
    return out
