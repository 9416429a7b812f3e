"""One checksum for files the studio wrote and reads back (converted shards, cached reference logits)."""

from __future__ import annotations

from pathlib import Path

DIGEST = "xxh3_128"


def file_digest(path: Path) -> str:
    """xxh3-128 of a file's bytes, streamed in 8 MB blocks. A guard against bytes that changed by
    accident (a disk, a stray write, a copy cut short), not against an attacker; at ~20 GB/s it
    costs almost nothing (bench/bench_checksum.py)."""
    import xxhash

    h = xxhash.xxh3_128()
    block = bytearray(8 * 2**20)
    view = memoryview(block)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(block):
            h.update(view[:n])
    return h.hexdigest()
