"""Text files replaced whole: written beside the target, then moved over it.

A reader (or a later run after a crash or a full disk) sees the old file or the
new one, never half of one; a failed write removes its partial copy and leaves
what was there.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
