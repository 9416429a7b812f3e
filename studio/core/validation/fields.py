"""Typed, ranged reads of single JSON fields, each refusal one sentence naming the field.

JSON's numbers are loose: `4.0`, `"4"` and `true` all compare or convert to 4
somewhere in Python. Every whole number the studio reads goes through
`whole`, which accepts only a JSON integer (an integral float such as 4.0 is
refused, not silently rounded, so estimate and convert can never disagree).
"""

from __future__ import annotations

import json

from studio.core.errors import StudioError


def shown(value, limit: int = 60) -> str:
    """A short rendering of a bad value for a message."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def is_whole(value) -> bool:
    return type(value) is int


def whole(value, where: str, lo: int, hi: int) -> int:
    """A JSON integer in [lo, hi]."""
    if not is_whole(value) or not lo <= value <= hi:
        raise StudioError(f"{where} must be a whole number from {lo:,} to {hi:,}, not {shown(value)}.")
    return value


def text(value, where: str, limit: int = 200) -> str:
    if not isinstance(value, str) or len(value) > limit or "\0" in value:
        raise StudioError(f"{where} must be a text of at most {limit:,} characters, not {shown(value)}.")
    return value


def mapping(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise StudioError(f"{where} must be a JSON object, not {shown(value)}.")
    return value


def one_of(value, where: str, choices) -> object:
    if not isinstance(value, (str, int)) or isinstance(value, bool) or value not in choices:
        listed = ", ".join(map(str, choices))
        raise StudioError(f"{where} must be one of {listed}, not {shown(value)}.")
    return value
