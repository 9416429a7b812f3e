"""Read a row range of one source tensor's bytes and turn them into MLX floats, exactly.

Only the bytes of the rows asked for are read (file seek + read of that byte
range), never a whole shard. Rows are slices along the first axis; every
quantization this module meets groups values along the last axis, so a row
range of the data and of its scales is always a contiguous byte range.

Encodings (see `inventory.Tensor`):
- float: BF16 / F16 / F32 as they are.
- fp8: F8_E4M3 with F32 `weight_scale_inv` per 128x128 block (DeepSeek-V3,
  MiniMax-M2), or with no scale at all.
- mxfp8: F8_E4M3 with one E8M0 exponent (U8) per 32 values, MLX's mxfp8 layout.
- mlx: already MLX-quantized, with its bits, group size and mode.
"""

from __future__ import annotations

import math
import mmap
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from studio.core.errors import StudioError
from studio.core.model.tensors import RawTensor, Tensor

FP8_BLOCK = 128

# Raw bytes of these safetensors dtypes as numpy sees them (bfloat16 as its bits).
_NUMPY = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32, "F64": np.float64,
          "U8": np.uint8, "I8": np.int8, "BOOL": np.uint8, "F8_E4M3": np.uint8, "F8_E5M2": np.uint8,
          "F8_E8M0": np.uint8, "U16": np.uint16, "I16": np.int16, "U32": np.uint32, "I32": np.int32,
          "U64": np.uint64, "I64": np.int64}


class SourceReader:
    """Reads byte ranges of a model's shard files; one open handle per shard per thread.

    `holds_rows`: the caller keeps what it reads for long and frees it piecemeal (the calibration
    pass holds a layer's experts and frees each projection once its start is made). Big reads then
    get a mapping of their own, see `_buffer`; a streaming reader (the converter) reuses heap blocks,
    about 4x faster to fill from the page cache here than fresh mappings."""

    holds_rows = False

    def __init__(self, root: Path):
        self.root = Path(root)
        self._local = threading.local()

    def _file(self, shard: str):
        files = getattr(self._local, "files", None)
        if files is None:
            files = self._local.files = {}
        f = files.get(shard)
        if f is None:
            try:
                f = files[shard] = open(self.root / shard, "rb")
            except OSError as exc:
                raise StudioError(f"cannot open source shard {shard}: {exc.strerror}.") from None
        return f

    def read(self, raw: RawTensor, first: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [first, stop) of `raw` along its first axis, as a numpy array of its raw dtype."""
        rows = raw.shape[0] if raw.shape else 1
        stop = rows if stop is None else stop
        row_bytes = raw.nbytes // rows if rows else 0
        begin, count = raw.start + first * row_bytes, (stop - first) * row_bytes
        buffer = _buffer(count) if self.holds_rows else np.empty(count, dtype=np.uint8)
        self.read_into(raw, begin, memoryview(buffer))
        shape = ((stop - first), *raw.shape[1:]) if raw.shape else ()
        return buffer.view(_NUMPY[raw.dtype]).reshape(shape)

    def read_into(self, raw: RawTensor, begin: int, buffer: memoryview) -> None:
        """Bytes [begin, begin + len(buffer)) of `raw`'s shard (a Hub source reads them over HTTP)."""
        count = len(buffer)
        f = self._file(raw.shard)
        try:
            f.seek(begin)
            got = f.readinto(buffer)
        except OSError as exc:
            raise StudioError(f"cannot read {raw.name} from {raw.shard}: {exc.strerror}.") from None
        if got != count:
            raise StudioError(
                f"{raw.shard} ends before the data of {raw.name} (needed bytes {begin}-{begin + count}); "
                "the shard is truncated."
            )

    def close(self) -> None:
        for f in getattr(self._local, "files", {}).values():
            f.close()
        self._local.files = {}


# A holding reader's reads this big get a mapping of their own, returned to the system the moment the
# rows are freed. From the heap they were not: once glibc has freed one big block it serves blocks up
# to 32 MB (an M3 expert's rows are 19 MB) from the heap, and keeps them resident after they are freed,
# so the calibration pass held every expert it had finished with (2.3 GB a projection on the M3 slice).
OWN_MAPPING_BYTES = 2**20


def _buffer(count: int) -> np.ndarray:
    if count < OWN_MAPPING_BYTES:
        return np.empty(count, dtype=np.uint8)
    return np.frombuffer(mmap.mmap(-1, count), dtype=np.uint8)


@dataclass
class SourceRows:
    """The raw bytes of rows [first, stop) of one logical tensor and its companions."""

    tensor: Tensor
    first: int
    stop: int
    data: np.ndarray
    companions: dict[str, np.ndarray]


def rows_of(tensor: Tensor) -> int:
    return tensor.shape[0] if tensor.shape else 1


def read_rows(reader: SourceReader, tensor: Tensor, first: int = 0, stop: int | None = None) -> SourceRows:
    """Read rows [first, stop) of a logical tensor and whatever scales they need."""
    stop = rows_of(tensor) if stop is None else stop
    if len(tensor.shape) < 2 and (first, stop) != (0, rows_of(tensor)):
        raise ValueError("a 0-D or 1-D tensor is read whole")
    data = reader.read(tensor.data, first, stop) if tensor.shape else reader.read(tensor.data)
    companions = {}
    for key, raw in tensor.companions.items():
        if tensor.encoding == "fp8":
            if first % FP8_BLOCK:
                raise ValueError("FP8 block rows must start on a block boundary")
            companions[key] = reader.read(raw, first // FP8_BLOCK, math.ceil(stop / FP8_BLOCK))
        else:
            companions[key] = reader.read(raw, first, stop)
    return SourceRows(tensor, first, stop, data, companions)


def _float_array(values: np.ndarray, dtype: str):
    import mlx.core as mx

    if dtype == "BF16":
        return mx.array(values).view(mx.bfloat16)
    if dtype == "F64":
        return mx.array(values.astype(np.float32))
    return mx.array(values)


def dequantize(rows: SourceRows):
    """The exact values of the rows read, as an MLX float array (float32 unless the source is a float)."""
    import mlx.core as mx

    tensor = rows.tensor
    encoding = tensor.encoding
    if encoding == "float":
        return _float_array(rows.data, tensor.dtype)
    if encoding == "fp8":
        if tensor.dtype != "F8_E4M3":
            raise StudioError(f"{tensor.name}: {tensor.dtype} FP8 weights are not supported; only e4m3 is.")
        values = mx.from_fp8(mx.array(rows.data), dtype=mx.float32)
        scale = rows.companions.get("weight_scale_inv")
        if scale is None:
            return values
        if values.ndim != 2:
            raise StudioError(f"{tensor.name}: FP8 block scales are supported on 2-D weights only.")
        scale = mx.array(scale.astype(np.float32, copy=False))
        out_rows, inputs = values.shape
        full = mx.repeat(mx.repeat(scale, FP8_BLOCK, axis=0), FP8_BLOCK, axis=1)[:out_rows, :inputs]
        return values * full
    if encoding == "mxfp8":
        scales = rows.companions["weight_scale_inv"]
        return mx.dequantize(mx.array(rows.data).view(mx.uint32), mx.array(scales), group_size=32, bits=8,
                             mode="mxfp8", dtype=mx.float32)
    if encoding == "mlx":
        quant = tensor.quant or {}
        biases = rows.companions.get("biases")
        scales = rows.companions["scales"]
        scales = _float_array(scales, tensor.companions["scales"].dtype) if scales.dtype != np.uint8 \
            else mx.array(scales)
        return mx.dequantize(
            mx.array(rows.data), scales,
            None if biases is None else _float_array(biases, tensor.companions["biases"].dtype),
            group_size=quant.get("group_size"), bits=quant.get("bits"), mode=quant.get("mode", "affine"),
            dtype=mx.float32,
        )
    raise StudioError(f"{tensor.name}: unknown source encoding {encoding!r}.")
