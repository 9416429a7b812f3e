"""Human-readable sizes, names and tables for the command line, the window and the model card.

One size convention across the app: **a GB is 10^9 bytes** (and an MB 10^6), as Hugging Face,
Finder and `du --si` show file sizes, and as the size formula counts exact bytes. Memory is
written the same way: a Mac keeps its marketed name ("a 256 GB Mac", which holds 256 x 2^30
bytes = 274.9 GB), and what it may give the GPU is converted to GB like every other byte count,
so a model's size and the room it needs read in one unit. Binary units (2^30) are never shown.
"""

from __future__ import annotations

import re
from pathlib import PurePath

GB = 10**9  # bytes; see the module docstring


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"


def nats(value: float) -> str:
    """A KL divergence: four decimals, or three significant digits when it is smaller than that shows."""
    if value == 0:
        return "0"
    return f"{value:.4f}" if abs(value) >= 1e-3 else f"{value:.2e}"


def table(headers: list[str], rows: list[list], right: set[int] | None = None) -> str:
    right = right if right is not None else set(range(1, len(headers)))
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# A folder in the huggingface_hub cache: .../models--org--name/snapshots/<commit>[/...]
_HUB_SNAPSHOT = re.compile(r"models--(?P<org>[^/\\]+?)--(?P<name>[^/\\]+)[/\\]snapshots[/\\](?P<commit>[0-9a-f]{7,64})")


def shareable_name(text: str) -> str:
    """How a model card and evaluation.json name a local file or folder: never the machine's path
    (the user's name, their folders), since publishing uploads both. A folder in the
    huggingface_hub cache becomes its repo id and commit; any other absolute path, its last part;
    anything else (a repo id, "the bundled sample text") stays as it is."""
    hub = _HUB_SNAPSHOT.search(text)
    if hub:
        return f"{hub['org']}/{hub['name']}@{hub['commit']}"
    if PurePath(text).is_absolute() or text.startswith("~") or re.match(r"^[A-Za-z]:[\\/]", text):
        return re.split(r"[\\/]", text.rstrip("\\/"))[-1] or text
    return text
