"""Read character vectors out of an R package's lazy-load data base.

R packages with ``LazyData: true`` ship ``data/Rdata.rdx`` (an index) and
``data/Rdata.rdb`` (the objects). Each object is R's XDR serialization,
zlib-compressed behind a 4-byte length. This reads just enough of that format
(vectors, pairlists, strings, attributes) to pull out the text of a data
package without needing R. Used by ``tools/train_demo_model.py``.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from pathlib import Path

NILVALUE, REFSXP = 254, 255
_SPECIAL = {242, 241, 247, 251, 252, 253}  # envs and markers with no payload


class _Reader:
    def __init__(self, data: bytes):
        self.d = data
        self.p = 0
        self.refs: list = []

    def int(self) -> int:
        (v,) = struct.unpack_from(">i", self.d, self.p)
        self.p += 4
        return v

    def bytes(self, n: int) -> bytes:
        b = self.d[self.p : self.p + n]
        self.p += n
        return b

    def header(self) -> None:
        fmt = self.bytes(2)
        if fmt != b"X\n":
            raise ValueError(f"not an XDR R serialization: {fmt!r}")
        version = self.int()
        self.int()  # writer R version
        self.int()  # minimal R version
        if version == 3:
            self.bytes(self.int())  # native encoding

    def length(self) -> int:
        n = self.int()
        if n == -1:  # long vector
            hi, lo = self.int(), self.int()
            n = (hi << 32) + lo
        return n

    def item(self):
        flags = self.int()
        t = flags & 0xFF
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))
        if t == NILVALUE or t in _SPECIAL:
            return None
        if t == REFSXP:
            idx = flags >> 8
            return self.refs[(idx if idx else self.int()) - 1]
        if t == 1:  # SYMSXP
            name = self.item()
            self.refs.append(name)
            return name
        if t in (249, 250, 248):  # namespace / package / persist: string vector
            self.int()
            n = self.int()
            val = [self.item() for _ in range(n)]
            self.refs.append(val)
            return val
        if t in (2, 239, 6, 240, 17):  # pairlists
            attr = self.item() if has_attr else None
            tag = self.item() if has_tag else None
            car = self.item()
            cdr = self.item()
            out = [(tag, car)]
            if isinstance(cdr, list) and cdr and isinstance(cdr[0], tuple):
                out.extend(cdr)
            del attr
            return out
        if t == 9:  # CHARSXP
            n = self.int()
            return None if n == -1 else self.bytes(n).decode("utf-8", "replace")
        if t in (10, 13):  # logical, integer
            n = self.length()
            val = list(struct.unpack_from(f">{n}i", self.d, self.p))
            self.p += 4 * n
        elif t == 14:  # real
            n = self.length()
            val = list(struct.unpack_from(f">{n}d", self.d, self.p))
            self.p += 8 * n
        elif t in (16, 19, 20):  # character vector, list, expression
            n = self.length()
            val = [self.item() for _ in range(n)]
        elif t == 24:  # raw
            val = self.bytes(self.length())
        else:
            raise ValueError(f"unsupported R SEXP type {t}")
        if has_attr:
            attrs = dict(self.item() or [])
            if "names" in attrs and t == 19:
                return dict(zip(attrs["names"], val))
        return val


def _unserialize(data: bytes):
    r = _Reader(data)
    r.header()
    return r.item()


def _inflate(blob: bytes) -> bytes:
    (n,) = struct.unpack_from(">i", blob, 0)
    body = blob[4:]
    kind = body[:1]
    if kind in (b"Z", b"2", b"X", b"0") and not body.startswith(b"x"):
        body = body[1:]
        if kind == b"2":
            return bz2.decompress(body)
        if kind == b"X":
            return lzma.decompress(body)
        if kind == b"0":
            return body[:n]
    return zlib.decompress(body)


def read_lazyload(rdx: Path) -> dict:
    """Return {object name: value} for every object in ``<base>.rdx/.rdb``."""
    rdx = Path(rdx)
    index = _unserialize(gzip.decompress(rdx.read_bytes()))
    rdb = rdx.with_suffix(".rdb").read_bytes()
    out = {}
    for name, (offset, size) in index["variables"].items():
        out[name] = _unserialize(_inflate(rdb[int(offset) : int(offset) + int(size)]))
    return out
