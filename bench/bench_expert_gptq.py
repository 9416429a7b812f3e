"""Expert-aware GPTQ vs the calibration before it vs plain conversion, at the same bytes, on held-out text.

For each MODEL (default: the bundled demo) under a preset (default Config-I):
convert it plainly; with calibration as it was before expert GPTQ ("today":
GPTQ for a routed projection only where every expert's X^T X together fit in
64 MB and the projection saw 4 tokens per input channel, an expert that saw
too few taking its projection's mean X^T X outright, the clipping search
everywhere else); and with expert-aware calibration (`expert_hessians`: each
expert's own X^T X where it saw enough tokens, the pooled correlation at the
expert's own channel scales where not). The same calibration statistics feed
both calibrated conversions; the tensors and bytes of all three are the same.
Each is scored against the source with the studio's evaluation (mean KL of the
next-token distributions) on the held-out evaluation text, which shares no
text with the calibration corpus. Target: expert-aware KL <= 0.8x today's.

    python bench/bench_expert_gptq.py [MODEL ...] [--preset config-i] [--max-tokens 4096] [--sequences N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.core.bundled import demo_model_path  # noqa: E402
from studio.core.calibration.calibrate import calibrate  # noqa: E402
from studio.core.calibration.convert_hook import CalibratedQuantizer  # noqa: E402
from studio.core.calibration.expert_hessians import need, read  # noqa: E402
from studio.core.convert import convert  # noqa: E402
from studio.core.evaluate.run import evaluate  # noqa: E402
from studio.core.formatting import table  # noqa: E402
from studio.core.project import Project  # noqa: E402

TODAY_BYTES = 64 * 2**20  # the per-unit X^T X bound before expert GPTQ


class TodayQuantizer(CalibratedQuantizer):
    """The calibrated quantizer as it was before expert GPTQ, from the same statistics."""

    def hessian_for(self, unit):
        stats = self.stats.units.get(unit.path)
        if stats is None or stats.sum_sq.ndim == 1:
            return super().hessian_for(unit)
        experts, inputs = stats.sum_sq.shape
        total = float(np.sum(stats.count))
        if stats.xtx is None or experts * inputs * inputs * 4 > TODAY_BYTES or total < need(inputs):
            return None
        xtx = read(stats.xtx)
        counts = stats.count[:, None, None]
        return np.where(counts >= need(inputs), xtx / np.maximum(counts, 1), xtx.sum(axis=0)[None] / total)


def bench(source: Path, preset: str, args) -> list[list[str]]:
    project = Project.open(source, preset)
    started = time.monotonic()
    stats = calibrate(project, sensitivity=False, sequences=args.sequences, progress=lambda p: print(f"  calibrating {source.name}: {p.label}",
                                                                           file=sys.stderr))
    print(f"{source.name}: calibration {stats.tokens:,} tokens, {time.monotonic() - started:.0f} s",
          file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        runs = [("plain", None), ("today's calibrated", TodayQuantizer(stats)),
                ("expert-GPTQ calibrated", CalibratedQuantizer(stats))]
        results = []
        for name, quantizer in runs:
            out = Path(work) / name.replace(" ", "-").replace("'", "")
            started = time.monotonic()
            result = convert(project, out, measure_errors=False, quantizer=quantizer)
            seconds = time.monotonic() - started
            r = evaluate(out, source, context=args.context, max_tokens=args.max_tokens, mode="together")
            results.append((name, result.bytes_written, r.kld_mean, r.ppl, r.top1_agreement, seconds, r))
            print(f"  {name}: KL {r.kld_mean:.4f} ({seconds:.0f} s to convert)", file=sys.stderr)
            if quantizer is not None and type(quantizer) is CalibratedQuantizer:
                tally = np.sum(list(quantizer.expert_methods().values()) or [[0, 0, 0]], axis=0)
                lines = quantizer.expert_lines()
        plain_kl, today_kl = results[0][2], results[1][2]
        for name, size, kl, ppl, top1, seconds, _ in results:
            rows.append([source.name, name, f"{size:,}", f"{kl:.4f}", f"{kl / plain_kl:.2f}x",
                         f"{kl / today_kl:.2f}x", f"{ppl:.2f}", f"{top1:.1%}", f"{seconds:.0f}"])
    last = results[-1][6]
    print(f"{source.name} ({preset}): held-out {last.text}, {last.tokens:,} tokens, windows of {args.context}; "
          f"expert projections: {tally[0]} GPTQ own Hessian, {tally[1]} pooled/shrunk, {tally[2]} clip-only")
    for line in lines:
        print(f"  {line}")
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="*")
    parser.add_argument("--preset", default="config-i")
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--sequences", type=int, default=None, help="calibration sequences of 256 tokens "
                        "(default: the studio's, 32)")
    args = parser.parse_args()
    rows = []
    for model in args.models or [str(demo_model_path())]:
        rows += bench(Path(model), args.preset, args)
    print()
    print(table(["model", "conversion", "bytes", "KL mean", "vs plain", "vs today", "ppl", "top-1", "convert s"],
                rows, right={2, 3, 4, 5, 6, 7, 8}))


if __name__ == "__main__":
    main()
