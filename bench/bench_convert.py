"""Benchmark: Config-I Studio's streaming converter against `mlx_lm.convert`.

Builds (once, cached under --work) a BF16 MiniMax-M3 (`minimax_m3_vl`) with
full-width layers (hidden 6144, experts of 3072, 64 query heads) but only a
few layers and experts and a tiny vocabulary, a few GB in all. Converts it to
uniform 4-bit group 64 with both tools, each in its own subprocess, and prints
wall time, peak RSS and the ratios. Targets: peak RSS at most 1/10 of
mlx_lm.convert's, wall time at most its. Also converts once more without the
per-unit error sums (quant_errors.json) and prints what measuring them costs.

    python bench/bench_convert.py [--work DIR] [--layers 2] [--experts 16] [--skip-mlx-lm]
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from factory import st  # noqa: E402
from factory.tiny import m3_layout  # noqa: E402
from factory.tokenizer import write_tokenizer  # noqa: E402

# Run a command and report its own wall time and peak RSS (RUSAGE_CHILDREN of a
# fresh process sees only that one child).
MEASURE = r"""
import json, resource, subprocess, sys, time
start = time.monotonic()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
wall = time.monotonic() - start
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
rss = rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux
print(json.dumps({"rc": code.returncode, "wall_s": wall, "peak_rss": rss, "stderr": code.stderr[-2000:]}))
"""


def build_model(path: Path, layers: int, experts: int) -> Path:
    if (path / "config.json").exists():
        return path
    tmp = path.with_name(path.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # A token vision side: the factory's parameter names for it have changed before.
    vision = {"vision_hidden": 64, "vision_inter": 128, "vision_layers": 1, "vision_blocks": 1,
              "projector_hidden": 128}
    accepted = inspect.signature(m3_layout).parameters
    config, specs = m3_layout(hidden=6144, layers=layers, dense_layers=0, experts=experts, top_k=4, heads=64,
                              kv_heads=4, head_dim=128, inter=3072, dense_inter=12288, shared_inter=3072,
                              index_heads=4, index_dim=128, index_block=128, vocab=512, max_pos=4096,
                              **{k: v for k, v in vision.items() if k in accepted})
    rng = np.random.default_rng(0)
    pool = st.to_bf16_bits(0.02 * rng.standard_normal(1 << 24).astype(np.float32))
    tensors = {name: st.Tensor("F32" if kind == "f32" else "BF16", shape) for name, shape, kind in specs.items}
    head, _ = st.header_bytes(tensors)
    with open(tmp / "model.safetensors", "wb") as f:
        f.write(head)
        for name, t in tensors.items():
            count = math.prod(t.shape)
            if t.dtype == "F32":
                f.write((0.02 * rng.standard_normal(count)).astype("<f4").tobytes())
                continue
            written = 0
            while written < count:  # tile the random pool from random offsets: fast, still varied
                start = int(rng.integers(0, len(pool) // 2))
                piece = pool[start:start + min(count - written, len(pool) - start)]
                f.write(piece.tobytes())
                written += len(piece)
    ids = write_tokenizer(tmp)
    config["torch_dtype"] = "bfloat16"
    config["text_config"]["eos_token_id"] = ids["<|im_end|>"]
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tmp.rename(path)
    return path


def measure(cmd: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    if result["rc"] != 0:
        raise SystemExit(f"{cmd[:4]} failed:\n{result['stderr']}")
    return result


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/configi-bench-convert"))
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--experts", type=int, default=16)
    parser.add_argument("--keep", action="store_true", help="keep the converted folders")
    parser.add_argument("--skip-mlx-lm", action="store_true", help="only time our converter, with and without errors")
    args = parser.parse_args()

    source = build_model(args.work / f"m3-bf16-{args.layers}L-{args.experts}E", args.layers, args.experts)
    print(f"source: {source} ({folder_bytes(source) / 1e9:.2f} GB bf16)")
    ours_out, theirs_out = args.work / "out-configi", args.work / "out-mlx-lm"
    plain_out = args.work / "out-configi-no-errors"
    for folder in (ours_out, theirs_out, plain_out):
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(folder.parent / f".{folder.name}.partial", ignore_errors=True)

    python = sys.executable
    # mlx_lm.convert first, so the source is equally warm in the page cache for both.
    theirs = None
    if not args.skip_mlx_lm:
        theirs = measure([python, "-m", "mlx_lm", "convert", "--hf-path", str(source), "--mlx-path",
                          str(theirs_out), "-q", "--q-bits", "4", "--q-group-size", "64"])
    # Without the error sums first: the source is then as warm for both of ours.
    plain = measure([python, "-m", "studio", "convert", str(source), str(plain_out), "--policy", "uniform-4bit",
                     "--no-errors"])
    ours = measure([python, "-m", "studio", "convert", str(source), str(ours_out), "--policy", "uniform-4bit"])

    rows = [("configi-studio convert", ours, folder_bytes(ours_out)),
            ("  without error sums", plain, folder_bytes(plain_out))]
    if theirs is not None:
        rows.append(("mlx_lm.convert", theirs, folder_bytes(theirs_out)))
    print(f"{'tool':<24}{'wall s':>9}{'peak RSS MB':>13}{'output GB':>11}")
    for name, r, size in rows:
        print(f"{name:<24}{r['wall_s']:>9.1f}{r['peak_rss'] / 1e6:>13.0f}{size / 1e9:>11.3f}")
    print(f"error sums (quant_errors.json) cost: wall x{ours['wall_s'] / plain['wall_s']:.3f}, "
          f"peak RSS x{ours['peak_rss'] / plain['peak_rss']:.3f}")
    if theirs is not None:
        print(f"ratio (ours / mlx_lm): wall {ours['wall_s'] / theirs['wall_s']:.2f} (target <= 1), "
              f"peak RSS {ours['peak_rss'] / theirs['peak_rss']:.3f} (target <= 0.1)")
    if not args.keep:
        for folder in (ours_out, theirs_out, plain_out):
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    start = time.monotonic()
    main()
    print(f"bench took {time.monotonic() - start:.0f} s")
