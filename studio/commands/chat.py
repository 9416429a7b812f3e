"""`configi-studio chat MODEL [-p PROMPT]`: talk to a model in the terminal.

With -p the reply streams to stdout and the stats go to stderr, so the reply
can be piped. Without -p it is a prompt loop that keeps the history; `/exit`
or end of input (Ctrl-D) leaves, `/reset` starts a fresh conversation.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys

from studio.core.errors import StudioError


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="MLX or Hugging Face model folder")
    parser.add_argument("-p", "--prompt", help="one prompt; without it, chat interactively")
    parser.add_argument("--system", help="system prompt")
    parser.add_argument("--max-tokens", "-m", type=int, default=512, help="most tokens per reply (default 512)")
    parser.add_argument("--temp", type=float, default=1.0, help="sampling temperature, 0 is greedy (default 1.0)")
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling (default 0.95)")
    parser.add_argument("--top-k", type=int, default=0, help="keep the k likeliest tokens, 0 is off (default)")
    parser.add_argument("--repetition-penalty", type=float, default=1.0, help="1.0 is off (default)")
    parser.add_argument("--seed", type=int, help="random seed, for a reproducible reply")


def _params(args):
    from studio.core.runtime.generation import SamplingParams

    if args.max_tokens < 1:
        raise StudioError("--max-tokens must be at least 1.")
    if not (math.isfinite(args.temp) and args.temp >= 0):  # NaN passes a plain `< 0` test
        raise StudioError("--temp must be a number, 0 or more.")
    if not (math.isfinite(args.repetition_penalty) and args.repetition_penalty > 0):
        raise StudioError("--repetition-penalty must be a number above 0 (1.0 is off).")
    if not 0 < args.top_p <= 1:
        raise StudioError("--top-p must be in (0, 1].")
    return SamplingParams(
        temperature=args.temp,
        top_p=args.top_p,
        top_k=max(0, args.top_k),
        max_tokens=args.max_tokens,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )


def _answer(loaded, history, params, system) -> str:
    """Stream one reply to stdout; stats to stderr; return the text."""
    from studio.core.runtime.generation import stream_reply

    parts = []
    stats = None
    for chunk in stream_reply(loaded, history, params, system=system):
        if chunk.text:
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
            parts.append(chunk.text)
        stats = chunk.stats or stats
    sys.stdout.write("\n")
    sys.stdout.flush()
    if stats is not None:
        print(stats.summary(), file=sys.stderr)
    return "".join(parts)


def run(args) -> int:
    from studio.core.check_model import check_model
    from studio.core.runtime.generation import load_model

    params = _params(args)
    check_model(args.model, loadable=True)  # the same checks as every command, before mlx-lm is involved
    loaded = load_model(args.model)
    print(f"loaded {loaded.describe()}", file=sys.stderr)

    if args.prompt is not None:
        _answer(loaded, [{"role": "user", "content": args.prompt}], params, args.system)
        return 0

    history: list[dict] = []
    interactive = sys.stdin.isatty()
    if interactive:
        print("Type a message; /reset clears the history, /exit or Ctrl-D leaves.", file=sys.stderr)
    while True:
        try:
            line = input(">>> " if interactive else "")
        except EOFError:
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            history.clear()
            print("(history cleared)", file=sys.stderr)
            continue
        history.append({"role": "user", "content": text})
        answer = _answer(loaded, history, params, args.system)
        history.append({"role": "assistant", "content": answer})
        if params.seed is not None:
            # Seed once: the session is reproducible, the turns still differ.
            params = dataclasses.replace(params, seed=None)
    return 0
