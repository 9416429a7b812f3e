"""Convert a planned model to an MLX folder, streaming, in bounded memory, resumably.

    convert(project, out, force=False, progress=None, cancel=None, max_shard_bytes=5e9)
    preflight(project, out, force=False)   what would stop convert, checked before a calibration pass

How it goes (one module per step):
1. `run`: lay out every output shard from the plan (names, shapes, dtypes,
   offsets); nothing is computed yet, so the headers are written first.
2. `resume`: in `.OUT.partial` beside the destination, keep the shards a
   previous run finished for the same plan and redo the rest.
3. `pipeline`: three threads, joined by queues of two: a reader fetches the
   byte ranges of the next chunk's sources (`core/unit_source.py`), the
   caller's thread runs `compute` on it (dequantize, transform, quantize with
   MLX: `compute.quantize_weight` is the quantizer seam; one small `mx.eval`
   per chunk), a writer puts the bytes at their offsets. `chunks` cuts units
   into chunks of rows.
4. `finish`: check the written headers against the plan, add config.json,
   tokenizer files, README.md, the policy and `quant_errors.json`, then move
   the folder into place.

Every 8th row of each quantized chunk is also dequantized again and compared
with the float values it came from, in the same `mx.eval`: per unit, the sums
of squared error and of squares give the relative error of those rows, a
close estimate of the whole tensor's (`quant_errors.json`) at about a third
more wall time on a CPU.

A cancel, an error or a kill leaves only the `.partial` folder (no config.json,
and a marker file saying it is unfinished); the next run resumes from it.
"""

from studio.core.cancel import CancelToken
from studio.core.convert.chunks import CHUNK_ELEMENTS
from studio.core.convert.compute import ERROR_ROW_STRIDE
from studio.core.convert.resume import MARKER_NAME, RECORD_NAME
from studio.core.convert.run import ConversionCancelled, ConvertResult, Progress, convert, preflight

__all__ = ["CHUNK_ELEMENTS", "ERROR_ROW_STRIDE", "MARKER_NAME", "RECORD_NAME", "CancelToken", "ConversionCancelled",
           "ConvertResult", "Progress", "convert", "preflight"]
