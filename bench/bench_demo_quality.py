"""Config-I against uniform 2-bit and 4-bit on the bundled demo model: size and quality.

Converts the model under each preset, then scores each output against the
source on the bundled held-out text: perplexity, KL divergence (mean and 99th
percentile), top-1 agreement and RMS Δp, on the default compute path
(dequantized float32 on a CPU). Prints one table.

    .venv/bin/python bench/bench_demo_quality.py [MODEL] [--presets config-i uniform-2bit uniform-4bit]
"""

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.core.convert import convert  # noqa: E402
from studio.core.evaluate.run import evaluate  # noqa: E402
from studio.core.formatting import table  # noqa: E402
from studio.core.project import Project  # noqa: E402
from studio.core.bundled import demo_model_path  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default=None)
    parser.add_argument("--presets", nargs="+", default=["config-i", "uniform-2bit", "uniform-4bit"])
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--context", type=int, default=256)
    args = parser.parse_args()
    source = Path(args.model or demo_model_path())

    rows = []
    with tempfile.TemporaryDirectory() as work:
        for preset in args.presets:
            project = Project.open(source, preset)
            out = Path(work) / preset
            convert(project, out)
            result = evaluate(out, source, context=args.context, max_tokens=args.max_tokens, mode="together")
            est = project.estimate
            rows.append([preset, f"{est.total_bytes / 1e6:.2f} MB", f"{est.bpw_quantized:.3f}",
                         f"{result.ppl:.3f}", f"{result.ppl_reference:.3f}", f"{result.kld_mean:.4f}",
                         f"{result.kld_p99:.3f}", f"{result.top1_agreement:.1%}", f"{result.dp_rms:.2%}",
                         result.verdict().label])
            print(f"{preset}: done", file=sys.stderr)
    print(f"{source.name}: {result.tokens:,} tokens of the held-out sample, windows of {args.context}; "
          f"{result.compute_sentence()}\n")
    print(table(["policy", "size", "bpw (quantized)", "ppl", "ppl source", "KL mean", "KL p99", "top-1", "RMS Δp",
                 "verdict"], rows))


if __name__ == "__main__":
    main()
