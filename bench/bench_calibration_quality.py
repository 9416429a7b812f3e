"""Calibrated quantization and the output-space fit against plain conversion, at equal bytes.

For each preset (Config-I, uniform 2-bit, mlx-lm's mixed-2-6) on the demo
model (or MODEL): convert it plainly; convert it with calibration (same bytes,
same tensors); and fit a policy to exactly the preset's bytes with the
output-space sensitivity (starting from Config-I, as `fit MODEL --target-gb N`
does) and convert that with calibration. The same path as

    configi-studio fit MODEL --target-gb N --sensitivity --out P.json
    configi-studio convert MODEL OUT --policy P.json --calibrate

Every output is scored against the source with the studio's evaluation
(mean KL of the next-token distributions, perplexity, top-1 agreement) on the
held-out evaluation text; calibration uses the bundled calibration corpus,
which shares no text with it.

    python bench/bench_calibration_quality.py [MODEL] [--presets ...] [--max-tokens 4096]
"""

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.core.bundled import demo_model_path  # noqa: E402
from studio.core.budget.propose import propose  # noqa: E402
from studio.core.calibration.calibrate import calibrate  # noqa: E402
from studio.core.calibration.convert_hook import CalibratedQuantizer  # noqa: E402
from studio.core.convert import convert  # noqa: E402
from studio.core.errors import StudioError  # noqa: E402
from studio.core.evaluate.run import evaluate  # noqa: E402
from studio.core.formatting import table  # noqa: E402
from studio.core.project import Project  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default=None)
    parser.add_argument("--presets", nargs="+", default=["config-i", "uniform-2bit", "mixed-2-6"])
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--context", type=int, default=256)
    args = parser.parse_args()
    source = Path(args.model or demo_model_path())
    stats = calibrate(Project.open(source, "config-i"), progress=lambda p: print(
        f"calibrating: {p.label}", file=sys.stderr))
    print(f"calibration: {stats.tokens:,} tokens of {stats.corpus_label}, {stats.seconds:.0f} s; "
          f"thin experts {stats.thin_experts()[0]} of {stats.thin_experts()[1]}", file=sys.stderr)

    def score(out: Path) -> tuple:
        r = evaluate(out, source, context=args.context, max_tokens=args.max_tokens, mode="together")
        return r.kld_mean, r.ppl, r.top1_agreement, r

    rows, last = [], None
    with tempfile.TemporaryDirectory() as work:
        for preset in args.presets:
            project = Project.open(source, preset)
            budget = project.estimate.total_bytes
            runs = []
            plain = Path(work) / f"{preset}-plain"
            convert(project, plain, measure_errors=False)
            runs.append(("plain", budget, score(plain)))
            cal = Path(work) / f"{preset}-calibrated"
            convert(project, cal, measure_errors=False, quantizer=CalibratedQuantizer(stats))
            runs.append(("calibrated", budget, score(cal)))
            start = Project.open(source, "config-i")  # as `fit MODEL --target-gb N` starts
            try:
                proposal = propose(start, budget, stats.sensitivity)
            except StudioError:  # below what Config-I's cells reach: `fit --policy PRESET` instead
                start = Project.open(source, preset)
                proposal = propose(start, budget, stats.sensitivity)
            fit_from = start.policy.name
            start.set_policy(proposal.policy)
            fitted = Path(work) / f"{preset}-fit"
            convert(start, fitted, measure_errors=False, quantizer=CalibratedQuantizer(stats))
            runs.append((f"fit (from {fit_from}) + calibrated", start.estimate.total_bytes, score(fitted)))
            base_kl = runs[0][2][0]
            for name, size, (kl, ppl, top1, last) in runs:
                rows.append([preset, name, f"{size:,}", f"{kl:.4f}", f"{kl / base_kl:.2f}x", f"{ppl:.2f}",
                             f"{top1:.1%}"])
            print(f"{preset}: done (budget {budget:,} bytes)", file=sys.stderr)
    print(f"{source.name}: held-out text {last.text} ({last.tokens:,} tokens, windows of {args.context}); "
          f"calibration text {stats.corpus_label}\n")
    print(table(["preset", "conversion", "bytes", "KL mean", "vs plain", "ppl", "top-1"], rows,
                right={2, 3, 4, 5, 6}))


if __name__ == "__main__":
    main()
