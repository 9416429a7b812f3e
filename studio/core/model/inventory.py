"""Open a model folder: read safetensors headers only, never tensor data.

The result is a table of logical tensors. A weight's scale companions
(`weight_scale_inv` for FP8 and MXFP8, `scales`/`biases` for MLX-quantized)
belong to that weight's row instead of being rows of their own.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from studio.core.dtypes import FLOAT_DTYPES, FP8_DTYPES
from studio.core.errors import StudioError
from studio.core.model.model_source import FolderSource
from studio.core.model.tensors import RawTensor, Tensor
from studio.core.validation.config import check_config
from studio.core.validation.fields import shown
from studio.core.validation.files import check_regular, inside, open_regular
from studio.core.validation.header import MAX_ENTRIES, check_entry
from studio.core.validation.json_input import CONFIG_BYTES, INDEX_BYTES, parse_json, read_json
from studio.core.validation.tensors import (FP8_BLOCK, check_embedding, check_fp8_scales, check_index_matches,
                                            check_layers, mlx_quant)

# A real header is a few MB at most; anything far larger is a corrupt length field.
MAX_HEADER_BYTES = 256 * 1024 * 1024
INDEX_NAME = "model.safetensors.index.json"

SOURCE_FORMATS = {
    "float": "float (bf16 / f16 / f32)",
    "fp8": "FP8 e4m3 with 128x128 block scales",
    "mxfp8": "MXFP8 (e4m3 with one E8M0 scale per 32 values)",
    "mlx": "MLX, already quantized",
}


@dataclass
class Inventory:
    root: Path
    config: dict
    tensors: list[Tensor]
    source_format: str
    shards: list[str]
    warnings: list[str] = field(default_factory=list)
    source: object = None  # a model_source.FolderSource or hub.source.HubSource; a folder's by default

    def __post_init__(self):
        self.by_name = {t.name: t for t in self.tensors}
        if self.source is None:
            self.source = FolderSource(self.root)

    @property
    def name(self) -> str:
        """The model's short name: its folder's, or its Hub repo's."""
        return self.source.name

    @property
    def text_config(self) -> dict:
        """The language model's settings; multimodal configs nest them."""
        return {**self.config, **(self.config.get("text_config") or {})}

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
    with open_regular(path, "safetensors shard") as f:
        size = os.fstat(f.fileno()).st_size
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
    return parse_header(raw, size, path.name)


def parse_header(raw: bytes, size: int, shard: str) -> list[RawTensor]:
    """The entries of a header's JSON bytes, for a shard file of `size` bytes."""
    header = parse_json(raw, f"{shard}: the safetensors header")
    if not isinstance(header, dict):
        raise StudioError(f"{shard}: the safetensors header is not a JSON object.")
    header.pop("__metadata__", None)
    if len(header) > MAX_ENTRIES:
        raise StudioError(f"{shard}: the header lists {len(header):,} tensors; no real shard has that many.")
    data_start = 8 + len(raw)
    data_len = size - data_start
    entries = []
    for name, entry in header.items():
        dtype, shape, begin, end, _ = check_entry(name, entry, shard)
        if end > data_len:
            raise StudioError(
                f"{shard}: tensor {name!r} ends at byte {data_start + end} but the file holds "
                f"{size} bytes; the shard is truncated."
            )
        entries.append(RawTensor(name, shape, dtype, shard, data_start + begin, data_start + end))

    ordered = sorted(entries, key=lambda t: t.start)
    for before, after in zip(ordered, ordered[1:]):
        if after.start < before.end:
            raise StudioError(f"{shard}: tensors {before.name!r} and {after.name!r} overlap.")
    return entries


def _index_weight_map(index: Path, root: Path) -> dict[str, str]:
    data = read_json(index, "safetensors index", INDEX_BYTES)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise StudioError(f"{index.name} in {root} is not a valid safetensors index (no weight_map object).")
    if len(weight_map) > MAX_ENTRIES:
        raise StudioError(f"{index.name} in {root} lists {len(weight_map):,} tensors; no real index has that many.")
    for name, shard in weight_map.items():
        if not isinstance(shard, str):
            raise StudioError(f"{index.name} in {root} maps tensor {name!r} to {shown(shard)}, not a shard file name.")
        inside(root, shard, index.name)
    return weight_map


def find_shards(root: Path) -> tuple[list[Path], dict[str, str] | None]:
    """The shard files, and the index's weight map when there is an index."""
    index = root / INDEX_NAME
    if os.path.lexists(index):
        weight_map = _index_weight_map(index, root)
        names = sorted(set(weight_map.values()))
        for name in names:
            if not os.path.lexists(root / name):
                raise StudioError(f"{root} is missing shard {name} named in its index.")
            check_regular(root / name, "shard")
        listed = set(names)
        # mlx-lm loads every model*.safetensors, so one the index leaves out would load unchecked.
        extra = sorted(p.name for p in root.glob("model*.safetensors") if p.name not in listed)
        if extra:
            raise StudioError(f"{root} holds {extra[0]}, which its index does not list; remove it or fix the index.")
        return [root / n for n in names], weight_map
    shards = sorted(root.glob("*.safetensors"))
    if not shards:
        raise StudioError(f"{root} holds no .safetensors files.")
    for shard in shards:
        check_regular(shard, "shard")
    return shards, None


def load_config(root: Path) -> dict:
    path = root / "config.json"
    if not root.is_dir():
        raise StudioError(f"{root} is not a folder.")
    if not os.path.lexists(path):
        raise StudioError(f"{root} has no config.json; a model folder needs one.")
    config = read_json(path, "config file", CONFIG_BYTES)
    check_config(config, "config.json")
    return config


def _group(raw: dict[str, RawTensor], config: dict) -> list[Tensor]:
    """Attach each scale companion to its weight; the rest stand alone."""
    quantization = config.get("quantization") or {}
    default_quant = {k: quantization[k] for k in ("bits", "group_size", "mode") if k in quantization}
    block = ((config.get("quantization_config") or {}).get("weight_block_size") or [FP8_BLOCK])[-1]
    tensors = []
    for name, data in raw.items():
        base, _, leaf = name.rpartition(".")
        if leaf in ("weight_scale_inv", "scales", "biases") and f"{base}.weight" in raw:
            continue  # a companion, handled with its weight
        if leaf == "weight_scale_inv":
            raise StudioError(f"{name} is a scale with no weight {base}.weight beside it.")
        companions = {}
        encoding, shape, quant = "float", data.shape, None
        scale_inv = raw.get(f"{base}.weight_scale_inv") if leaf == "weight" else None
        scales = raw.get(f"{base}.scales") if leaf == "weight" else None
        if scale_inv is not None:
            companions["weight_scale_inv"] = scale_inv
            encoding = check_fp8_scales(name, data, scale_inv, block)
        elif scales is not None and data.dtype == "U32":
            companions["scales"] = scales
            biases = raw.get(f"{base}.biases")
            if biases is not None:
                companions["biases"] = biases
            settings = dict(default_quant)
            override = quantization.get(base)
            if isinstance(override, dict):
                settings.update(override)
            quant, shape = mlx_quant(name, data, scales, biases, settings)
            encoding = "mlx"
        elif data.dtype in FP8_DTYPES:
            if data.dtype != "F8_E4M3":
                raise StudioError(f"{name}: {data.dtype} weights are not supported; FP8 sources must be e4m3.")
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
    shards, weight_map = find_shards(root)
    return build_inventory(root, config, {shard.name: read_header(shard) for shard in shards}, weight_map)


def build_inventory(root: Path, config: dict, headers: dict[str, list[RawTensor]],
                    weight_map: dict[str, str] | None, source=None) -> Inventory:
    """The inventory from a checked config and each shard's header entries (in shard order),
    whichever source they were read from."""
    raw: dict[str, RawTensor] = {}
    for entries in headers.values():
        for entry in entries:
            if entry.name in raw:
                raise StudioError(f"tensor {entry.name!r} appears in both {raw[entry.name].shard} and {entry.shard}.")
            raw[entry.name] = entry
    if not raw:
        where = source.label if source is not None else root
        raise StudioError(f"{where} has safetensors files but no tensors in them.")
    if weight_map is not None:
        check_index_matches(weight_map, raw, INDEX_NAME)
    tensors = _group(raw, config)
    text_config = {**config, **(config.get("text_config") or {})}
    check_layers(tensors, text_config)
    check_embedding(tensors, text_config)
    inventory = Inventory(root, config, tensors, _detect_format(tensors, config), list(headers), source=source)
    odd = [t.name for t in tensors if t.dtype not in FLOAT_DTYPES and t.encoding == "float"]
    if odd:
        inventory.warnings.append(
            f"{len(odd)} tensor(s) hold integer data (first: {odd[0]}); they are copied as they are."
        )
    return inventory
