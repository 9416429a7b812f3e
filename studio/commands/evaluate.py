"""`configi-studio eval OUT --reference MODEL`: how far a quant drifts from its reference."""

from __future__ import annotations

import argparse
import json
import sys

from studio.core.errors import StudioError
from studio.core.formatting import nats


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", metavar="OUT", help="the quantized model folder to validate")
    parser.add_argument("--reference", "-r", metavar="MODEL", required=True,
                        help="the model folder it was made from (or any trusted higher-precision copy)")
    parser.add_argument("--text", metavar="FILE", help="UTF-8 text to score on (default: the bundled sample)")
    parser.add_argument("--max-tokens", type=int, default=4096, metavar="N",
                        help="score at most N tokens of the text (default 4096)")
    parser.add_argument("--context", type=int, default=512, metavar="N",
                        help="tokens per window; each window is scored independently (default 512)")
    parser.add_argument("--mode", choices=("auto", "together", "cached"), default="auto",
                        help="together: both models in memory; cached: the reference first, its "
                             "distributions to disk, then the output alone (default: auto)")
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="where the reference's distributions are cached (default: the user cache folder)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _progress(stage: str, done: int, total: int) -> None:
    print(f"\r{stage}: window {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from studio.core.evaluate import EvalCancelled, evaluate

    if args.max_tokens < 2:
        raise StudioError(f"--max-tokens must be at least 2, not {args.max_tokens}.")
    if args.context < 2:
        raise StudioError(f"--context must be at least 2, not {args.context}.")
    try:
        result = evaluate(args.output, args.reference, text_path=args.text, context=args.context,
                          max_tokens=args.max_tokens, mode=args.mode, cache_dir=args.cache_dir,
                          progress=None if args.json else _progress)
    except EvalCancelled:
        print("configi-studio: evaluation cancelled", file=sys.stderr)
        return 130
    from studio.core.model_card import record_evaluation

    recorded = record_evaluation(args.output, result)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        print(format_report(result))
        if recorded:
            print(f"\nThe results are in {args.output}/README.md and evaluation.json.")
    return 0


def format_report(result) -> str:
    from studio.core.formatting import table

    v = result.verdict()
    rows = [
        ["perplexity (output)", f"{result.ppl:.4f}"],
        ["perplexity (reference)", f"{result.ppl_reference:.4f}"],
        ["perplexity increase", f"{result.ppl_increase:+.2%}"],
        ["KL divergence, mean (nats)", f"{result.kld_mean:.5f}"],
        ["KL divergence, median / p99 / max",
         f"{nats(result.kld_median)} / {nats(result.kld_p99)} / {nats(result.kld_max)}"],
        ["top-1 agreement", f"{result.top1_agreement:.2%}"],
        ["reference's mean top-token probability", f"{result.reference_confidence:.2%}"],
        ["tokens scored / windows", f"{result.tokens:,} / {result.windows} x {result.context}"],
    ]
    lines = [
        f"Output:    {result.output}",
        f"Reference: {result.reference}",
        f"Text:      {result.text}",
        "",
        table(["figure", "value"], rows),
        "",
        f"Verdict: {v.label}. {v.summary}",
    ]
    for f in v.findings:
        note = "" if f.counted else " (not counted)"
        lines += [f"  - {f.name}: {f.value} -> {f.label}{note}", f"    {f.meaning}", f"    {f.rule}"]
    lines += [f"Note: {c}" for c in v.caveats]
    how = "both models in memory" if result.mode == "together" else f"reference cache {result.cache}"
    exact = "exact" if result.kld_exact else "top-k lower bound"
    lines.append(f"({how}; KL {exact}; {result.seconds:.1f} s)")
    return "\n".join(lines)
