"""Build studio/resources/calibration/corpus.txt, the default calibration text.

    python tools/build_calibration_corpus.py [--deb r-cran-janeaustenr_1.0.0-1_all.deb]

Mixes four kinds of text, interleaved in pieces of about 2 KB so that every
calibration sequence sees more than one kind (sources and licences in the
README beside the corpus):
- prose: paragraphs from the middle of "Emma" and "Sense and Sensibility"
  (public domain), from Debian's r-cran-janeaustenr, never from "Persuasion",
  whose end is the evaluation text;
- chat turns and non-English text written for this project
  (tools/calibration_corpus/);
- code: Python's own `textwrap.py` (PSF licence), from the running interpreter.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from demo_model.corpus import fetch_deb, load_books, paragraphs  # noqa: E402

OUT = ROOT / "studio" / "resources" / "calibration" / "corpus.txt"
HERE = ROOT / "tools" / "calibration_corpus"
PROSE_BYTES = {"emma": 16_000, "sensesensibility": 14_000}
CODE_BYTES = 14_000
PIECE = 2_000


def _middle(paras: list[str], budget: int) -> list[str]:
    start = len(paras) // 2
    out, n = [], 0
    for p in paras[start:]:
        if n >= budget:
            break
        out.append(p)
        n += len(p) + 2
    return out


def _pieces(text: str, size: int = PIECE) -> list[str]:
    """Cut at paragraph (blank-line) boundaries into pieces of about `size` characters."""
    pieces, cur = [], ""
    for block in text.split("\n\n"):
        cur = f"{cur}\n\n{block}" if cur else block
        if len(cur) >= size:
            pieces.append(cur)
            cur = ""
    return pieces + ([cur] if cur else [])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deb", type=Path, help="a local r-cran-janeaustenr .deb instead of apt-get download")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        books = load_books(args.deb or fetch_deb(Path(tmp)))
    prose = "\n\n".join(p for key, budget in PROSE_BYTES.items() for p in _middle(paragraphs(books[key]), budget))
    code = Path(textwrap.__file__).read_text()[:CODE_BYTES].rsplit("\n\n", 1)[0]
    kinds = [_pieces(prose), _pieces((HERE / "chat.txt").read_text().strip(), 1_000),
             _pieces(code), _pieces((HERE / "other_languages.txt").read_text().strip(), 600)]
    mixed = []
    while any(kinds):
        for pieces in kinds:
            if pieces:
                mixed.append(pieces.pop(0))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n\n".join(mixed) + "\n")
    print(f"{OUT}: {OUT.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
