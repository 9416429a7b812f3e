"""Benchmarks share the test factories' full-scale MiniMax-M3 header-only replica."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from factory.replica import write_m3_replica  # noqa: E402


def m3_replica(source_format: str = "mxfp8", base: Path = Path("/tmp/configi-bench")) -> Path:
    path = base / f"m3-{source_format}"
    if not (path / "config.json").exists():
        write_m3_replica(path, source_format)
    return path
