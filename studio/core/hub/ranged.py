"""Byte ranges of files on the Hub, fetched over HTTP with several requests in flight.

`RangeFetcher.read_into(name, start, buffer)` fills `buffer` with the bytes of
file `name` from `start`: a big range is cut into pieces fetched in parallel,
each piece is checked for length, and a piece that fails (a dropped
connection, a timeout, a 5xx, a 429, a short body) is asked for again from the
first byte it is still missing, after a backoff (the server's Retry-After
when it gives one). A 4xx other than 408/429 is an answer, not a glitch: it
becomes one clear sentence.

Requests go through huggingface_hub's shared HTTP session with the headers it
builds (user agent and, when one is known, the token). The Hub redirects a
file's `resolve` URL to a signed CDN URL; the final URL is remembered per
file so later ranges skip the redirect, and it is asked for without the
Authorization header (the token never leaves the Hub's own host).
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from studio.core.errors import StudioError

PIECE_BYTES = 8 * 2**20  # ranges above this are split so several requests are in flight
IN_FLIGHT = 8
ATTEMPTS = 8
BACKOFF_S = 0.25  # doubled each retry, with jitter, up to BACKOFF_MAX_S
BACKOFF_MAX_S = 16.0
RETRY_AFTER_MAX_S = 60.0
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
TIMEOUT_S = 60.0


class _Retry(Exception):
    def __init__(self, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.wait = wait


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


class RangeFetcher:
    """Reads byte ranges of one repo revision's files; safe to share between threads."""

    def __init__(self, urls: dict[str, str], headers: dict[str, str], *, what: str,
                 in_flight: int | None = None, piece_bytes: int | None = None):
        from huggingface_hub import get_session

        self.urls = urls  # file name -> resolve URL (pinned to a commit)
        self.headers = dict(headers)
        self.anonymous = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        self.what = what  # "org/name@commit", for messages
        # Module settings read here, not at import, so a test can shrink them.
        self.piece_bytes, self.attempts, self.backoff_s = piece_bytes or PIECE_BYTES, ATTEMPTS, BACKOFF_S
        self.session = get_session()
        self.pool = ThreadPoolExecutor(max_workers=in_flight or IN_FLIGHT, thread_name_prefix="configi-hub-range")
        self.direct: dict[str, str] = {}  # file name -> URL after redirects
        self.closed = False
        self.retries = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        self.closed = True
        self.pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ public

    def read(self, name: str, start: int, count: int) -> bytearray:
        buffer = bytearray(count)
        self.read_into(name, start, memoryview(buffer))
        return buffer

    def read_into(self, name: str, start: int, buffer: memoryview) -> None:
        """Fill `buffer` with bytes [start, start + len(buffer)) of `name`."""
        count = len(buffer)
        if count == 0:
            return
        if count <= self.piece_bytes:
            self._piece(name, start, buffer)
            return
        offsets = range(0, count, self.piece_bytes)
        futures = [self.pool.submit(self._piece, name, start + a, buffer[a:a + self.piece_bytes]) for a in offsets]
        try:
            for future in futures:
                future.result()
        finally:
            for future in futures:
                future.cancel()
            for future in futures:
                if not future.cancelled():
                    future.exception()  # wait, so no piece writes into a buffer that is gone

    # ------------------------------------------------------------------ one piece

    def _piece(self, name: str, start: int, buffer: memoryview) -> None:
        done, failures = 0, 0
        while done < len(buffer):
            if self.closed:
                raise StudioError(f"reading {name} of {self.what} was stopped.")
            try:
                done += self._request(name, start + done, buffer[done:])
            except _Retry as exc:
                failures += 1
                with self._lock:
                    self.retries += 1
                if failures >= self.attempts:
                    raise StudioError(f"the Hub kept failing to send {name} of {self.what} "
                                      f"({exc}, {failures} tries); run the same command again to resume.") from None
                time.sleep(self._wait(failures, exc.wait))

    def _wait(self, failures: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, RETRY_AFTER_MAX_S)
        base = min(self.backoff_s * 2 ** (failures - 1), BACKOFF_MAX_S)
        return base * (0.5 + random.random() / 2)

    def _request(self, name: str, start: int, buffer: memoryview) -> int:
        """One GET for the bytes still missing; returns how many arrived (raises _Retry on a glitch)."""
        from huggingface_hub.utils import httpx

        url = self.direct.get(name) or self.urls[name]
        direct = url != self.urls[name]
        headers = self.anonymous if direct else self.headers
        wanted = len(buffer)
        got = 0
        try:
            with self.session.stream("GET", url, headers={**headers, "Range": f"bytes={start}-{start + wanted - 1}",
                                                          "Accept-Encoding": "identity"},
                                     timeout=TIMEOUT_S) as response:
                status = response.status_code
                if status in RETRY_STATUS:
                    raise _Retry(f"HTTP {status}", _retry_after(response.headers.get("Retry-After")))
                if direct and status in (401, 403, 404, 410):  # a signed URL that expired: resolve again
                    self.direct.pop(name, None)
                    raise _Retry(f"HTTP {status} from the CDN", 0)
                if status == 200 and start == 0 and _length(response) in (None, wanted):
                    pass  # a server that ignores Range but sends exactly what we asked for
                elif status != 206:
                    raise StudioError(_status_sentence(status, name, self.what))
                elif not _content_range_ok(response.headers.get("Content-Range"), start):
                    raise _Retry(f"a range starting elsewhere ({response.headers.get('Content-Range')})")
                final = str(response.url)
                if final != url and _origin(final) != _origin(self.urls[name]):
                    self.direct[name] = final
                for piece in response.iter_raw():
                    take = min(len(piece), wanted - got)
                    buffer[got:got + take] = piece[:take]
                    got += take
                    if got >= wanted:
                        break
        except (httpx.TransportError, httpx.StreamError) as exc:
            if got:
                return got  # keep what arrived; the next request asks for the rest
            raise _Retry(type(exc).__name__) from None
        if got < wanted:
            if got:
                return got
            raise _Retry(f"a short body ({got} of {wanted} bytes)")
        return got


def _length(response) -> int | None:
    try:
        return int(response.headers.get("Content-Length"))
    except (TypeError, ValueError):
        return None


def _content_range_ok(value: str | None, start: int) -> bool:
    """`bytes START-END/SIZE` starting where we asked (a shorter END is fine: the rest is asked again)."""
    if not value or not value.startswith("bytes "):
        return False
    try:
        return int(value[6:].split("-", 1)[0]) == start
    except ValueError:
        return False


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _status_sentence(status: int, name: str, what: str) -> str:
    if status in (401, 403):
        return f"the Hub refused {name} of {what} (HTTP {status}); check that your token has access to the repo."
    if status == 404:
        return f"{what} has no file {name} any more."
    if status == 200:
        return f"the server sent all of {name} of {what} instead of the byte range asked for; it does not serve ranges."
    if status == 416:
        return f"{name} of {what} is shorter than its header says; the file on the Hub is truncated."
    return f"the Hub answered HTTP {status} for {name} of {what}."
