"""Tokens/s of the studio's chat path against mlx-lm's own stream_generate.

Both run in this process on the same loaded model (so the same CPU float32
cast, if any), the same prompt and greedy sampling, alternating (ABBA), after one
warm-up each. Prints the best (least disturbed: other processes share the
CPU) and the median decode tokens/s (mlx-lm's definition: tokens after the
first over the time since the first), the best end-to-end tokens/s (prompt
included, wall clock), tokens per CPU-second of this process (steadier when
the machine is busy) and our/mlx-lm ratios. Target: within 5%.

    .venv/bin/python bench/bench_chat.py [MODEL] [--max-tokens 256] [--runs 5]

MODEL defaults to the bundled demo model; without it, a tiny model is built
with the test factory.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from studio.core.runtime.generation import SamplingParams, build_prompt, load_model, stream_tokens  # noqa: E402

PROMPT = [{"role": "user", "content": "Write a short story about a lighthouse keeper and the sea."}]


def _default_model(tmp: str, arch: str) -> Path:
    demo = ROOT / "studio" / "resources" / "demo_model"
    if (demo / "config.json").is_file():
        return demo
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from factory import make_tiny_model
    except ImportError:
        sys.exit("bench_chat: no demo model and no tests/factory; pass a model folder")
    return make_tiny_model(arch, Path(tmp) / arch)


def ours(loaded, prompt, params):
    start, cpu = time.perf_counter(), time.process_time()
    stats = None
    for chunk in stream_tokens(loaded, prompt, params):
        stats = chunk.stats or stats
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    n = stats.generated_tokens
    return n, stats.tokens_per_s, n / wall, n / cpu


def reference(loaded, prompt, params):
    import mlx.core as mx
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    start, cpu = time.perf_counter(), time.process_time()
    last = None
    for last in stream_generate(
        loaded.model, loaded.tokenizer, mx.array(prompt), max_tokens=params.max_tokens,
        sampler=make_sampler(temp=0.0),
    ):
        pass
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    n = last.generation_tokens
    return n, last.generation_tps, n / wall, n / cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="model folder (default: demo model or a tiny factory model)")
    parser.add_argument("--arch", default="qwen3_moe", help="factory architecture when no model is given")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.model) if args.model else _default_model(tmp, args.arch)
        loaded = load_model(path)
        print(f"model: {loaded.describe()}")
        params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
        prompt = build_prompt(loaded.tokenizer, PROMPT)

        ours(loaded, prompt, params)  # warm-up
        reference(loaded, prompt, params)
        results = {"studio": [], "mlx-lm": []}
        runners = {"studio": ours, "mlx-lm": reference}
        for run in range(args.runs):
            order = list(runners) if run % 2 == 0 else list(reversed(runners))  # ABBA: no order bias
            for name in order:
                results[name].append(runners[name](loaded, prompt, params))

    import mlx.core as mx

    print(f"device: {mx.default_device()}, prompt {len(prompt)} tokens, {args.runs} runs, greedy")
    best = {}
    for name, rows in results.items():
        tokens = rows[0][0]
        figures = (
            max(r[1] for r in rows),  # decode, best run
            statistics.median(r[1] for r in rows),  # decode, median run
            max(r[2] for r in rows),  # end to end, best run
            statistics.median(r[3] for r in rows),  # per CPU second, median run
        )
        best[name] = figures
        print(f"{name:>7}: {tokens} tokens, decode best {figures[0]:8.1f} tok/s (median {figures[1]:8.1f}), "
              f"end-to-end best {figures[2]:8.1f} tok/s, {figures[3]:8.1f} tok per CPU-s")
    r = [best["studio"][i] / best["mlx-lm"][i] for i in range(4)]
    print(f"  ratio studio/mlx-lm: decode best {r[0]:.3f}, median {r[1]:.3f}, end-to-end best {r[2]:.3f}, "
          f"per CPU-s {r[3]:.3f} (target >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
