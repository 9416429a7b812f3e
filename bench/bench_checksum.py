"""Benchmark: what the shard checksums (issue 13) cost a conversion, and a resume.

Converts the same BF16 MiniMax-M3-width model as bench_convert.py (built once,
cached under --work) to uniform 4-bit twice in this process: as shipped (each
shard is read back and hashed with xxh3-128 when it is sealed) and with the
hashing switched off, the peer. Then times what a resume adds: hashing every
finished shard again, against reading the same bytes without hashing and
against hashing them with BLAKE2b (the other candidate). Prints wall times and
ratios.

    python bench/bench_checksum.py [--work DIR] [--layers 1] [--experts 8] [--shard-gb 0.5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_convert import build_model  # noqa: E402

from studio.core.convert import convert, pipeline  # noqa: E402
from studio.core.checksum import file_digest  # noqa: E402
from studio.core.project import Project  # noqa: E402


def _convert(source: Path, out: Path, shard_bytes: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    started = time.monotonic()
    convert(Project.open(source, "uniform-4bit"), out, max_shard_bytes=shard_bytes, measure_errors=False)
    return time.monotonic() - started


def _read(path: Path, hasher=None) -> None:
    block = bytearray(8 * 2**20)
    view = memoryview(block)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(block):
            if hasher is not None:
                hasher.update(view[:n])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/configi-bench-convert"))
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--shard-gb", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    source = build_model(args.work / f"m3-width-L{args.layers}-E{args.experts}", args.layers, args.experts)
    shard_bytes = int(args.shard_gb * 1e9)
    out = args.work / "checksum-out"

    real = pipeline.file_digest
    _convert(source, out, shard_bytes)  # warm the page cache and MLX for both timed runs
    on, off = [], []
    for _ in range(args.repeats):  # alternate, and keep each one's best: a shared machine is noisy
        on.append(_convert(source, out, shard_bytes))
        pipeline.file_digest = lambda path: ""
        try:
            off.append(_convert(source, out, shard_bytes))
        finally:
            pipeline.file_digest = real
    with_hash, without = min(on), min(off)

    shards = sorted(out.glob("model*.safetensors"))
    size = sum(p.stat().st_size for p in shards)
    started = time.monotonic()
    for path in shards:
        file_digest(path)
    hashing = time.monotonic() - started
    started = time.monotonic()
    for path in shards:
        _read(path)
    reading = time.monotonic() - started
    started = time.monotonic()
    for path in shards:
        _read(path, hashlib.blake2b())
    blake = time.monotonic() - started
    shutil.rmtree(out, ignore_errors=True)

    print(f"source {source.name}, output {size / 1e9:.2f} GB in {len(shards)} shard(s)")
    print(f"convert, checksums on      {with_hash:7.2f} s   (best of {args.repeats})")
    print(f"convert, checksums off     {without:7.2f} s   (peer, best of {args.repeats})")
    print(f"  cost of checksums        {with_hash - without:+7.2f} s   ratio {with_hash / without:.3f}")
    print(f"resume check: xxh3-128     {hashing:7.2f} s   {size / hashing / 1e9:.2f} GB/s")
    print(f"resume check: read only    {reading:7.2f} s   {size / reading / 1e9:.2f} GB/s   (peer)")
    print(f"resume check: blake2b      {blake:7.2f} s   {size / blake / 1e9:.2f} GB/s")
    print(f"  xxh3 vs reading          ratio {hashing / reading:.2f}; blake2b vs reading {blake / reading:.2f}")


if __name__ == "__main__":
    main()
