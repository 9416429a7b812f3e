"""JSON from files the user did not write for us: one sentence for any way it can be hostile.

Refused: bytes that are not UTF-8, nesting deeper than MAX_DEPTH (100,000 levels
would otherwise raise RecursionError, here or later in a copy), NaN and
Infinity, numbers that overflow, and files above a size cap chosen per kind of
file far above any real one (so a 50 MB policy is refused at once instead of
taking a minute).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from studio.core.errors import StudioError
from studio.core.validation.files import read_capped

MAX_DEPTH = 32
# Caps per kind of file: each at least 20x the largest real one we know of.
CONFIG_BYTES = 4 * 2**20        # MiniMax-M3's config.json is 12 KB
INDEX_BYTES = 128 * 2**20       # M3's index (45,700 entries) is 4 MB
POLICY_BYTES = 2 * 2**20        # a per-layer, per-role policy for 60 layers is ~300 KB
TOKENIZER_CONFIG_BYTES = 64 * 2**20


def _constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} overflows")
    return value


def depth(value) -> int:
    """Nesting depth of lists and objects, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            return level
        stack.extend((child, level + 1) for child in item if isinstance(child, (dict, list)))
    return deepest


def parse_json(data: bytes, what: str):
    """The value of a JSON document, or one sentence saying why not."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StudioError(f"{what} is not UTF-8 text (byte {exc.start}).") from None
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_float)
    except RecursionError:
        raise StudioError(f"{what} is nested too deeply to be real JSON.") from None
    except json.JSONDecodeError as exc:
        raise StudioError(f"{what}: line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg}).") from None
    except ValueError as exc:  # NaN, Infinity, overflowing or absurdly long numbers
        why = "a number has thousands of digits" if "digits" in str(exc) else str(exc).splitlines()[0][:120]
        raise StudioError(f"{what} is not valid JSON ({why}).") from None
    if depth(value) > MAX_DEPTH:
        raise StudioError(f"{what} is nested more than {MAX_DEPTH} levels deep; no real one is.")
    return value


def read_json(path: Path, what: str, limit: int):
    """Parse a regular file of at most `limit` bytes as JSON."""
    return parse_json(read_capped(path, what, limit), f"{what} {path}")
