"""The training text: Jane Austen's six novels from Debian's r-cran-janeaustenr, as paragraphs,
with the end of "Persuasion" held out."""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

from rlazyload import read_lazyload

DEB_NAME = "r-cran-janeaustenr"
DEB_VERSION = "1.0.0-1"
DATA_DIR = "usr/lib/R/site-library/janeaustenr/data/"
BOOKS = [  # R object name, title; training order
    ("sensesensibility", "Sense and Sensibility"),
    ("prideprejudice", "Pride and Prejudice"),
    ("mansfieldpark", "Mansfield Park"),
    ("emma", "Emma"),
    ("northangerabbey", "Northanger Abbey"),
    ("persuasion", "Persuasion"),
]
EVAL_BOOK = "persuasion"
EVAL_BYTES = 45_000


def fetch_deb(workdir: Path) -> Path:
    """Download the pinned .deb with apt-get (falls back to the current one)."""
    for spec in (f"{DEB_NAME}={DEB_VERSION}", DEB_NAME):
        r = subprocess.run(
            ["apt-get", "download", spec],
            cwd=workdir,
            capture_output=True,
            text=True,
            check=False,
        )
        debs = sorted(workdir.glob(f"{DEB_NAME}_*.deb"))
        if r.returncode == 0 and debs:
            return debs[0]
    raise SystemExit(
        f"could not download {DEB_NAME} with apt-get (run 'apt-get update'?):\n"
        f"{r.stderr.strip()}"
    )


def read_deb_members(deb: Path, wanted_prefix: str) -> dict[str, bytes]:
    """Files under wanted_prefix from a .deb (an ar archive holding data.tar.*)."""
    data = deb.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise SystemExit(f"{deb} is not a .deb")
    pos, out = 8, {}
    while pos < len(data):
        header = data[pos : pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = data[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size & 1)
        if not name.startswith("data.tar"):
            continue
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
            for m in tar.getmembers():
                path = m.name.lstrip("./")
                if m.isfile() and path.startswith(wanted_prefix):
                    out[path[len(wanted_prefix) :]] = tar.extractfile(m).read()
    return out


def load_books(deb: Path) -> dict[str, list[str]]:
    files = read_deb_members(deb, DATA_DIR)
    with tempfile.TemporaryDirectory() as tmp:
        for name, blob in files.items():
            (Path(tmp) / name).write_bytes(blob)
        objects = read_lazyload(Path(tmp) / "Rdata.rdx")
    return {key: [ln or "" for ln in objects[key]] for key, _ in BOOKS}


_HEADING = re.compile(r"^(chapter|volume|book|vol\.)\b|^[^a-z]*$", re.IGNORECASE)


def paragraphs(lines: list[str]) -> list[str]:
    """Lines to cleaned paragraphs, headings and the title page dropped."""
    paras, cur = [], []
    for ln in lines + [""]:
        if ln.strip():
            cur.append(ln.strip())
            continue
        if cur:
            p = " ".join(cur)
            cur = []
            p = p.replace("_", "")
            p = re.sub(r"\s+", " ", p).strip()
            if len(p) < 40 and (_HEADING.search(p) or p.upper() == p):
                continue
            if _HEADING.search(p) and len(p) < 80:
                continue
            paras.append(p)
    # The first few paragraphs are title-page matter ("by Jane Austen", dates).
    while paras and (len(paras[0]) < 60 or "Austen" in paras[0]):
        paras.pop(0)
    return paras


def split_corpus(books: dict[str, list[str]]):
    """Return (train paragraphs per book, eval text)."""
    train, eval_paras = {}, []
    for key, _ in BOOKS:
        paras = paragraphs(books[key])
        if key == EVAL_BOOK:
            n, i = 0, len(paras)
            while i > 0 and n < EVAL_BYTES:
                i -= 1
                n += len(paras[i]) + 2
            eval_paras, paras = paras[i:], paras[:i]
        train[key] = paras
    return train, "\n\n".join(eval_paras) + "\n"
