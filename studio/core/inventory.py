"""Open a model folder: read safetensors headers only, never tensor data.

The result is a table of logical tensors. A weight's scale companions
(`weight_scale_inv` for FP8 and MXFP8, `scales`/`biases` for MLX-quantized)
belong to that weight's row instead of being rows of their own.
"""

from __future__ import annotations

import math

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from studio.core.dtypes import DTYPE_BITS, FLOAT_DTYPES, FP8_DTYPES
from studio.core.errors import StudioError

# A real header is a few MB at most; anything far larger is a corrupt length field.
MAX_HEADER_BYTES = 256 * 1024 * 1024

SOURCE_FORMATS = {
    "float": "float (bf16 / f16 / f32)",
    "fp8": "FP8 e4m3 with 128x128 block scales",
    "mxfp8": "MXFP8 (e4m3 with one E8M0 scale per 32 values)",
    "mlx": "MLX, already quantized",
}


class RawTensor(NamedTuple):
    """One entry of a safetensors header, with absolute byte offsets in its shard.

    A NamedTuple rather than a dataclass: M3 has 45,700 of them and opening
    must stay well under a second.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    shard: str
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(slots=True)
class Tensor:
    """A logical tensor: the data plus any scale companions it is stored with.

    `shape` is the logical (dequantized) shape. `encoding` says how to read it:
    "float", "fp8" (128x128 block scales), "mxfp8" (E8M0 per 32), or "mlx"
    (MLX-quantized with `quant` = {"bits", "group_size", "mode"}).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    encoding: str
    data: RawTensor
    companions: dict[str, RawTensor] = field(default_factory=dict)
    quant: dict | None = None

    @property
    def shard(self) -> str:
        return self.data.shard

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + sum(c.nbytes for c in self.companions.values())

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


@dataclass
class Inventory:
    root: Path
    config: dict
    tensors: list[Tensor]
    source_format: str
    shards: list[str]
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.by_name = {t.name: t for t in self.tensors}

    @property
    def text_config(self) -> dict:
        """The language model's settings; multimodal configs nest them."""
        return {**self.config, **self.config.get("text_config", {})}

    @property
    def model_type(self) -> str:
        return self.config.get("model_type", "")

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def total_elements(self) -> int:
        return sum(t.elements for t in self.tensors)


def read_header(path: Path) -> list[RawTensor]:
    """Parse one shard's header and check it against the file's real size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise StudioError(f"{path.name} is too short to be a safetensors file ({size} bytes).")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(size - 8, MAX_HEADER_BYTES):
            raise StudioError(
                f"{path.name} claims a {header_len}-byte header but the file holds {size} bytes; "
                "the shard is truncated or not a safetensors file."
            )
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StudioError(f"{path.name}: the safetensors header is not valid JSON ({exc}).") from None
    if not isinstance(header, dict):
        raise StudioError(f"{path.name}: the safetensors header is not a JSON object.")
    header.pop("__metadata__", None)

    data_start = 8 + header_len
    data_len = size - data_start
    entries = []
    shard = path.name
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise StudioError(f"{path.name}: tensor {name!r} has a malformed header entry.") from None
        bits = DTYPE_BITS.get(dtype)
        if bits is None:
            raise StudioError(f"{path.name}: tensor {name!r} has unknown dtype {dtype!r}.")
        count = 1
        for d in shape:
            if type(d) is not int or d < 0:
                raise StudioError(f"{path.name}: tensor {name!r} has an invalid shape {list(shape)}.")
            count *= d
        if type(begin) is not int or type(end) is not int or end - begin != count * bits // 8 or begin < 0:
            raise StudioError(
                f"{path.name}: tensor {name!r} spans {end - begin} bytes but its shape and dtype need "
                f"{count * DTYPE_BITS[dtype] // 8}."
            )
        if end > data_len:
            raise StudioError(
                f"{path.name}: tensor {name!r} ends at byte {data_start + end} but the file holds "
                f"{size} bytes; the shard is truncated."
            )
        entries.append(RawTensor(name, shape, dtype, shard, data_start + begin, data_start + end))

    ordered = sorted(entries, key=lambda t: t.start)
    for before, after in zip(ordered, ordered[1:]):
        if after.start < before.end:
            raise StudioError(f"{path.name}: tensors {before.name!r} and {after.name!r} overlap.")
    return entries


def find_shards(root: Path) -> list[Path]:
    index = root / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise StudioError(f"{index.name} in {root} is not a valid safetensors index.") from None
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (root / n).exists()]
        if missing:
            raise StudioError(f"{root} is missing shard {missing[0]} named in its index.")
        return [root / n for n in names]
    shards = sorted(root.glob("*.safetensors"))
    if not shards:
        raise StudioError(f"{root} holds no .safetensors files.")
    return shards


def load_config(root: Path) -> dict:
    path = root / "config.json"
    if not root.is_dir():
        raise StudioError(f"{root} is not a folder.")
    if not path.exists():
        raise StudioError(f"{root} has no config.json; a model folder needs one.")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise StudioError(f"{path} is not valid JSON ({exc}).") from None
    if not isinstance(config, dict):
        raise StudioError(f"{path} is not a JSON object.")
    return config


def _group(raw: dict[str, RawTensor], config: dict) -> list[Tensor]:
    """Attach each scale companion to its weight; the rest stand alone."""
    quantization = config.get("quantization") or {}
    default_quant = {k: quantization[k] for k in ("bits", "group_size", "mode") if k in quantization}
    default_quant.setdefault("mode", "affine")
    tensors = []
    for name, data in raw.items():
        base, _, leaf = name.rpartition(".")
        if leaf in ("weight_scale_inv", "scales", "biases") and f"{base}.weight" in raw:
            continue  # a companion, handled with its weight
        if name.endswith(".weight_scale_inv"):
            continue
        companions = {}
        encoding, shape, quant = "float", data.shape, None
        scale_inv = raw.get(f"{base}.weight_scale_inv") if leaf == "weight" else None
        scales = raw.get(f"{base}.scales") if leaf == "weight" else None
        if scale_inv is not None and data.dtype in FP8_DTYPES:
            companions["weight_scale_inv"] = scale_inv
            mx_like = scale_inv.dtype in ("U8", "F8_E8M0") and scale_inv.shape[-1] * 32 == data.shape[-1]
            encoding = "mxfp8" if mx_like else "fp8"
        elif scales is not None and data.dtype == "U32":
            companions["scales"] = scales
            if f"{base}.biases" in raw:
                companions["biases"] = raw[f"{base}.biases"]
            quant = dict(default_quant)
            override = quantization.get(base)
            if isinstance(override, dict):
                quant.update(override)
            mode = quant.get("mode", "affine")
            group = quant.get("group_size") or (64 if mode == "affine" else 32 if mode != "nvfp4" else 16)
            inputs = scales.shape[-1] * group
            quant = {"bits": data.shape[-1] * 32 // inputs, "group_size": group, "mode": mode}
            shape = (*data.shape[:-1], inputs)
            encoding = "mlx"
        elif data.dtype in FP8_DTYPES:
            encoding = "fp8"  # per-tensor FP8 with no scale: read as is
        tensors.append(Tensor(name, tuple(shape), data.dtype, encoding, data, companions, quant))
    return tensors


def _detect_format(tensors: list[Tensor], config: dict) -> str:
    encodings = {t.encoding for t in tensors}
    if "mlx" in encodings:
        return "mlx"
    if "mxfp8" in encodings:
        return "mxfp8"
    if "fp8" in encodings:
        return "fp8"
    return "float"


def open_model(path: str | os.PathLike) -> Inventory:
    """Read a Hugging Face style folder's config and headers into an Inventory."""
    root = Path(path).expanduser().resolve()
    if not root.exists():
        raise StudioError(f"{root} does not exist.")
    config = load_config(root)
    raw: dict[str, RawTensor] = {}
    shards = find_shards(root)
    for shard in shards:
        for entry in read_header(shard):
            if entry.name in raw:
                raise StudioError(f"tensor {entry.name!r} appears in both {raw[entry.name].shard} and {shard.name}.")
            raw[entry.name] = entry
    if not raw:
        raise StudioError(f"{root} has safetensors files but no tensors in them.")
    tensors = _group(raw, config)
    inventory = Inventory(root, config, tensors, _detect_format(tensors, config), [s.name for s in shards])
    odd = [t.name for t in tensors if t.dtype not in FLOAT_DTYPES and t.encoding == "float"]
    if odd:
        inventory.warnings.append(
            f"{len(odd)} tensor(s) hold integer data (first: {odd[0]}); they are copied as they are."
        )
    return inventory
