"""`configi-studio eval OUT --reference MODEL`: how far a quant drifts from its reference.

Progress goes to stderr in every mode (``--json`` included: the JSON alone is
on stdout), rewritten in place on a terminal and as plain lines, at most one
every few seconds, when stderr is a file or a pipe.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from studio.core.evaluate.defaults import (
    DEFAULT_COMPUTE,
    DEFAULT_CONTEXT,
    DEFAULT_MAX_TOKENS,
    DEFAULT_SCORE,
    SCORE_CHOICES,
)
from studio.core.errors import StudioError
from studio.core.runtime.compute_path import COMPUTE_CHOICES

STAGE_WORDS = {"reference": "reference pass", "output": "output pass", "together": "both models"}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", metavar="OUT", help="the quantized model folder to validate")
    parser.add_argument("--reference", "-r", metavar="MODEL", required=True,
                        help="the model folder it was made from (or any trusted higher-precision copy)")
    parser.add_argument("--text", metavar="FILE", help="UTF-8 text to score on (default: the bundled sample)")
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, metavar="N",
                        help=f"score at most N tokens of the text (default {DEFAULT_MAX_TOKENS})")
    parser.add_argument("--context", type=int, default=DEFAULT_CONTEXT, metavar="N",
                        help=f"tokens per window; each window is scored independently (default {DEFAULT_CONTEXT})")
    parser.add_argument("--mode", choices=("auto", "together", "cached"), default="auto",
                        help="together: both models in memory; cached: the reference first, its "
                             "distributions to disk, then the output alone (default: auto)")
    parser.add_argument("--compute", choices=COMPUTE_CHOICES, default=DEFAULT_COMPUTE,
                        help="dequantized: quantized weights dequantized once, float32 compute; quantized: "
                             "MLX's quantized kernels (default auto: dequantized on a CPU, quantized on Metal)")
    parser.add_argument("--score", choices=SCORE_CHOICES, default=DEFAULT_SCORE,
                        help="which predictions of each window count: all, or the second half, as llama.cpp's "
                             "perplexity tool scores (compare with GGUF cards at the same --context)")
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="where the reference's distributions are cached (default: the user cache folder)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


class StderrProgress:
    """Window progress on stderr: in place on a terminal, else a plain line at most every ``every_s``."""

    def __init__(self, stream=None, every_s: float = 5.0):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every_s = every_s
        self.started = time.monotonic()
        self.last_line = 0.0

    def __call__(self, p) -> None:
        now = time.monotonic()
        text = f"{STAGE_WORDS.get(p.stage, p.stage)}: window {p.done}/{p.total} ({now - self.started:.0f} s)"
        if self.tty:
            print(f"\r{text}", end="" if p.done < p.total else "\n", file=self.stream, flush=True)
        elif p.done == p.total or p.done == 1 or now - self.last_line >= self.every_s:
            self.last_line = now
            print(text, file=self.stream, flush=True)


def run(args: argparse.Namespace) -> int:
    from studio.core.card.eval_record import evaluate_and_record
    from studio.core.evaluate.run import EvalCancelled

    if args.max_tokens < 2:
        raise StudioError(f"--max-tokens must be at least 2, not {args.max_tokens}.")
    if args.context < 2:
        raise StudioError(f"--context must be at least 2, not {args.context}.")
    from studio.core.check_model import check_model

    check_model(args.output, loadable=True)  # the same checks as every command, first
    check_model(args.reference, loadable=True)
    if args.text:
        from pathlib import Path

        from studio.core.validation.files import check_regular

        check_regular(Path(args.text), "text file")  # a named pipe would block the read forever
    try:
        done = evaluate_and_record(args.output, args.reference, text_path=args.text, context=args.context,
                                   max_tokens=args.max_tokens, mode=args.mode, compute=args.compute, score=args.score,
                                   cache_dir=args.cache_dir, progress=StderrProgress())
    except EvalCancelled:
        print("configi-studio: evaluation cancelled", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(done.result.to_dict(), indent=1))
    else:
        print(format_report(done.result))
        if done.recorded is True:
            print(f"\nThe results are in {args.output}/README.md and evaluation.json.")
        elif done.recorded:
            print(f"\nNot recorded: {done.recorded}")
    return 0


def format_report(result) -> str:
    from studio.core.evaluate.report import figure_rows
    from studio.core.formatting import table

    v = result.verdict()
    lines = [
        f"Output:    {result.output}",
        f"Reference: {result.reference}",
        f"Text:      {result.text}",
        "",
        table(["figure", "value"], [[name, value] for _, name, value in figure_rows(result)]),
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
