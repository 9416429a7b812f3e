"""A small Hugging Face Hub on 127.0.0.1, for tests and benchmarks: the real
`huggingface_hub` client talks to it through `HF_ENDPOINT`.

It serves model folders in the Hub's URL layout and implements what the
installed client calls (huggingface_hub 2.x, with `HF_HUB_DISABLE_XET` so
uploads take the plain LFS path; the xet CAS protocol is not served):

    GET  /api/models/{repo}[/revision/{rev}]          repo info (sha, siblings, gated, private)
    GET  /api/models/{repo}/tree/{rev}                 the file list snapshot_download reads
    HEAD/GET /{repo}/resolve/{rev}/{path}              file, with Range, X-Repo-Commit, ETag; an LFS file
                                                       redirects (302, X-Linked-*) to the CDN below
    HEAD/GET {cdn}/cdn/{sha256}                        LFS bytes from another origin (port), with Range
    POST /api/repos/create                             create a repo (409 if it exists)
    POST /api/models/{repo}/preupload/{rev}            upload mode per file (lfs for weights)
    POST /{repo}.git/info/lfs/objects/batch            LFS batch: upload actions, multipart above a size
    PUT  /lfs/{oid} | /lfs/{oid}/{part}                LFS object or one part of it
    POST /lfs/{oid}                                    multipart completion
    POST /api/models/{repo}/commit/{rev}               ndjson commit (file, lfsFile, deletedFile)
    POST /api/validate-yaml                            the model card's metadata block (checked on commit)

Faults for the resilience tests: `fail(kind, count, match)` makes the next
`count` ranged GETs whose path contains `match` fail with "drop" (connection
closed in the middle of the body), "503", "429" (Retry-After: 1) or
"truncate" (a shorter 206 than asked, honestly labelled).

Bounded: it listens on 127.0.0.1 only, refuses bodies over `max_body`, and
stops by itself `lifetime_s` after it starts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

PIECE = 1 << 20
HUB_TOKEN = "hf_studioTestToken0123456789"  # the tests' token (HF_TOKEN); it must never reach any output


@dataclass
class Commit:
    files: dict[str, Path]  # path in repo -> file on disk
    lfs: dict[str, str] = field(default_factory=dict)  # path in repo -> sha256 (LFS files)


@dataclass
class Repo:
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    gated: bool = False
    private: bool = False


_HASHES: dict[tuple, str] = {}


def _sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _HASHES:
        return _HASHES[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(8 * PIECE):
            h.update(piece)
    _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def _is_lfs(name: str, size: int) -> bool:
    return name.endswith((".safetensors", ".bin", ".gguf")) or size > 10 * PIECE


class HubServer:
    def __init__(self, *, tokens: tuple[str, ...] = (), lifetime_s: float = 600, max_body: int = 1 << 31,
                 multipart_above: int = 8 * PIECE, part_size: int = 4 * PIECE):
        self.repos: dict[str, Repo] = {}
        self.tokens = set(tokens)  # tokens that may see gated and private repos and write
        self.max_body, self.multipart_above, self.part_size = max_body, multipart_above, part_size
        self.store = Path(tempfile.mkdtemp(prefix="hub-server-"))  # uploaded objects and commits
        self.lock = threading.Lock()
        self.faults: list[list] = []  # [kind, remaining, match]
        self.log: list[tuple[str, str, str | None]] = []  # (method, path, range)
        self.auth_seen: set[str] = set()
        self.in_flight = self.max_in_flight = 0
        self.bytes_served = 0
        self.latency_s = 0.0  # added before each ranged body, as a far server would
        self.blobs: dict[str, tuple[str, Path]] = {}  # sha256 -> (a file name, its path): what the CDN serves
        self.cdn_auth = 0  # CDN requests that carried an Authorization header (the token must stay on the Hub)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.cdn_httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))  # another origin, as the Hub's CDN
        for server in (self.httpd, self.cdn_httpd):
            server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.cdn = f"http://127.0.0.1:{self.cdn_httpd.server_address[1]}"
        self._threads = [threading.Thread(target=s.serve_forever, daemon=True, name="hub-server")
                         for s in (self.httpd, self.cdn_httpd)]
        self._timer = threading.Timer(lifetime_s, self.stop)
        self._timer.daemon = True

    # ------------------------------------------------------------------ setup

    def start(self) -> "HubServer":
        for thread in self._threads:
            thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        self._timer.cancel()
        for server in (self.httpd, self.cdn_httpd):
            server.shutdown()
            server.server_close()
        shutil.rmtree(self.store, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def add_folder(self, repo_id: str, folder: Path, *, revision: str = "main", gated: bool = False,
                   private: bool = False, only: tuple[str, ...] | None = None) -> str:
        """Serve `folder`'s files (read in place) as a new commit of `repo_id`; returns the commit hash."""
        files = {p.relative_to(folder).as_posix(): p for p in sorted(Path(folder).rglob("*"))
                 if p.is_file() and not p.name.startswith(".") and (only is None or p.name in only)}
        repo = self.repos.setdefault(repo_id, Repo())
        repo.gated, repo.private = gated, private
        return self._commit(repo, revision, files)

    def _commit(self, repo: Repo, branch: str, files: dict[str, Path]) -> str:
        lfs = {name: _sha256(p) for name, p in files.items() if _is_lfs(name, p.stat().st_size)}
        self.blobs.update({sha: (name, files[name]) for name, sha in lfs.items()})
        digest = hashlib.sha1(json.dumps([branch, len(repo.commits), sorted(files),
                                          sorted(lfs.values())]).encode()).hexdigest()
        repo.commits[digest] = Commit(dict(files), lfs)
        repo.refs[branch] = digest
        return digest

    def fail(self, kind: str, count: int = 1, match: str = ".safetensors") -> None:
        with self.lock:
            self.faults.append([kind, count, match])

    def take_fault(self, path: str) -> str | None:
        with self.lock:
            for fault in self.faults:
                if fault[1] > 0 and fault[2] in path:
                    fault[1] -= 1
                    return fault[0]
        return None

    def files(self, repo_id: str, revision: str = "main") -> dict[str, Path]:
        repo = self.repos[repo_id]
        return repo.commits[repo.refs.get(revision, revision)].files


# ---------------------------------------------------------------------- the handler


_API_INFO = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?$")
_TREE = re.compile(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_PREUPLOAD = re.compile(r"^/api/models/([^/]+/[^/]+)/preupload/([^/]+)$")
_COMMIT = re.compile(r"^/api/models/([^/]+/[^/]+)/commit/([^/]+)$")
_BATCH = re.compile(r"^/([^/]+/[^/]+)\.git/info/lfs/objects/batch$")
_LFS = re.compile(r"^/lfs/([0-9a-f]{64})(?:/(\d+))?$")
_CDN = re.compile(r"^/cdn/([0-9a-f]{64})$")


def _handler(hub: HubServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        # ------------------------------------------------------------ plumbing

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, str(v))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, obj, status: int = 200) -> None:
            self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

        def _fail(self, status: int, code: str | None = None, message: str = "") -> None:
            headers = {"Content-Type": "application/json"}
            if code:
                headers["X-Error-Code"] = code
            if message:
                headers["X-Error-Message"] = message
            self._send(status, json.dumps({"error": message or code or ""}).encode(), headers)

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            if length > hub.max_body:
                raise ValueError("body too large")
            return self.rfile.read(length)

        def _token(self) -> str | None:
            auth = self.headers.get("Authorization") or ""
            token = auth[7:] if auth.startswith("Bearer ") else None
            if token:
                hub.auth_seen.add(token)
            return token if token in hub.tokens else None

        def _repo(self, repo_id: str, *, for_files: bool = False) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.private and self._token() is None):
                self._fail(404 if self.command != "HEAD" else 401, "RepoNotFound", "Repository not found")
                return None
            if for_files and repo.gated and self._token() is None:
                self._fail(403, "GatedRepo", "Access to model is restricted")
                return None
            return repo

        def _commit_of(self, repo: Repo, revision: str) -> tuple[str, Commit] | None:
            revision = unquote(revision)
            sha = repo.refs.get(revision, revision)
            commit = repo.commits.get(sha)
            if commit is None:
                self._fail(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return None
            return sha, commit

        # ------------------------------------------------------------ dispatch

        def _route(self):
            path = urlsplit(self.path).path
            self._token()  # notes which tokens arrive
            with hub.lock:
                hub.log.append((self.command, self.path, self.headers.get("Range")))
            try:
                if self.server is hub.cdn_httpd:
                    if self.command in ("GET", "HEAD") and (m := _CDN.match(path)) and m.group(1) in hub.blobs:
                        return self._cdn(m.group(1))
                    return self._fail(404, None, "no such object")
                if self.command in ("GET", "HEAD") and (m := _API_INFO.match(path)):
                    return self._info(m.group(1), m.group(2) or "main")
                if self.command == "GET" and (m := _TREE.match(path)):
                    return self._tree(m.group(1), m.group(2))
                if self.command in ("GET", "HEAD") and (m := _RESOLVE.match(path)):
                    return self._resolve(m.group(1), m.group(2), unquote(m.group(3)))
                if self.command == "POST" and path == "/api/validate-yaml":
                    return self._validate_yaml()
                if self.command == "POST" and path == "/api/repos/create":
                    return self._create()
                if self.command == "POST" and (m := _PREUPLOAD.match(path)):
                    return self._preupload(m.group(1))
                if self.command == "POST" and (m := _BATCH.match(path)):
                    return self._batch(m.group(1))
                if self.command == "PUT" and (m := _LFS.match(path)):
                    return self._put_object(m.group(1), m.group(2))
                if self.command == "POST" and (m := _LFS.match(path)):
                    return self._complete(m.group(1))
                if self.command == "POST" and (m := _COMMIT.match(path)):
                    return self._commit(m.group(1), m.group(2))
                self._fail(404, None, f"no route for {self.command} {path}")
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            except ValueError as exc:
                self._fail(400, None, str(exc))

        do_GET = do_HEAD = do_POST = do_PUT = _route

        # ------------------------------------------------------------ reading

        def _info(self, repo_id: str, revision: str):
            repo = self._repo(repo_id)
            if repo is None:
                return
            found = self._commit_of(repo, revision)
            if found is None:
                return
            sha, commit = found
            siblings = []
            for name, p in sorted(commit.files.items()):
                entry = {"rfilename": name, "size": p.stat().st_size}
                if name in commit.lfs:
                    entry["lfs"] = {"sha256": commit.lfs[name], "size": p.stat().st_size, "pointerSize": 134}
                siblings.append(entry)
            self._json({"id": repo_id, "_id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private,
                        "gated": "manual" if repo.gated else False, "disabled": False, "siblings": siblings,
                        "tags": [], "downloads": 0, "likes": 0})

        def _tree(self, repo_id: str, revision: str):
            """Every file of a revision (snapshot_download lists them; one page, files at any depth)."""
            repo = self._repo(repo_id)
            found = repo and self._commit_of(repo, revision)
            if not found:
                return
            sha, commit = found
            entries = []
            for name, p in sorted(commit.files.items()):
                size = p.stat().st_size
                entry = {"type": "file", "path": name, "size": size,
                         "oid": hashlib.sha1(f"{sha}:{name}:{size}".encode()).hexdigest()}
                if name in commit.lfs:
                    entry["lfs"] = {"oid": commit.lfs[name], "size": size, "pointerSize": 134}
                entries.append(entry)
            self._json(entries)

        def _resolve(self, repo_id: str, revision: str, name: str):
            repo = self._repo(repo_id, for_files=True)
            if repo is None:
                return
            found = self._commit_of(repo, revision)
            if found is None:
                return
            sha, commit = found
            path = commit.files.get(name)
            if path is None:
                return self._fail(404, "EntryNotFound", f"{name} does not exist")
            size = path.stat().st_size
            etag = commit.lfs.get(name) or hashlib.sha1(f"{sha}:{name}:{size}".encode()).hexdigest()
            headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes",
                       "Content-Type": "application/octet-stream"}
            if name in commit.lfs:
                # As the Hub does: an LFS file's bytes come from the CDN, another origin.
                headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": size,
                                "Location": f"{hub.cdn}/cdn/{etag}"})
                return self._send(302, b"", headers)
            self._serve(name, path, headers)

        def _cdn(self, sha: str):
            if self.headers.get("Authorization"):
                with hub.lock:
                    hub.cdn_auth += 1
            name, path = hub.blobs[sha]
            self._serve(name, path, {"ETag": f'"{sha}"', "Accept-Ranges": "bytes",
                                     "Content-Type": "application/octet-stream"})

        def _serve(self, name: str, path: Path, headers: dict):
            """The file, or the Range asked for, with the faults the test asked for."""
            size = path.stat().st_size
            start, end = 0, size  # [start, end)
            ranged = self.headers.get("Range")
            status = 200
            if ranged:
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", ranged.strip())
                if not m or int(m.group(1)) >= size:
                    return self._send(416, b"", {"Content-Range": f"bytes */{size}"})
                start = int(m.group(1))
                end = min(size, int(m.group(2)) + 1) if m.group(2) else size
                status = 206
            fault = hub.take_fault(name) if ranged and self.command == "GET" else None
            if fault == "503":
                return self._fail(503, None, "Service Unavailable")
            if fault == "429":
                return self._send(429, b"slow down", {"Retry-After": "1"})
            if fault == "truncate":
                end = start + max(1, (end - start) // 2)
            if status == 206:
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, str(v))
            self.send_header("Content-Length", str(end - start))
            self.end_headers()
            if self.command == "HEAD":
                return
            with hub.lock:
                hub.in_flight += 1
                hub.max_in_flight = max(hub.max_in_flight, hub.in_flight)
            try:
                if ranged and hub.latency_s:
                    time.sleep(hub.latency_s)
                self._stream(path, start, end, drop=fault == "drop")
            finally:
                with hub.lock:
                    hub.in_flight -= 1

        def _stream(self, path: Path, start: int, end: int, drop: bool):
            stop_at = start + (end - start) // 2 if drop else end
            with open(path, "rb") as f:
                f.seek(start)
                at = start
                while at < stop_at:
                    piece = f.read(min(PIECE, stop_at - at))
                    if not piece:
                        break
                    self.wfile.write(piece)
                    at += len(piece)
                    with hub.lock:
                        hub.bytes_served += len(piece)
            if drop:
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)

        # ------------------------------------------------------------ writing

        def _create(self):
            if self._token() is None:
                return self._fail(401, None, "Invalid credentials in Authorization header")
            payload = json.loads(self._body())
            repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
            if repo_id in hub.repos:  # the real Hub's 409 names the repo's url too; the client reads it
                return self._json({"error": "You already created this model repo",
                                   "url": f"{hub.endpoint}/{repo_id}"}, 409)
            repo = hub.repos[repo_id] = Repo(private=payload.get("visibility") == "private" or
                                             bool(payload.get("private")))
            hub._commit(repo, "main", {})
            self._json({"url": f"{hub.endpoint}/{repo_id}", "name": repo_id, "id": repo_id})

        def _validate_yaml(self):
            """The model card's metadata block: `key: value` lines between two `---` lines."""
            content = json.loads(self._body())["content"]
            lines = content.split("\n")
            errors = []
            if lines[0].strip() == "---":
                end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() == "---"), None)
                if end is None:
                    errors.append({"message": "the metadata block is never closed"})
                else:
                    errors += [{"message": f"not a key: value line: {line!r}"} for line in lines[1:end]
                               if line.strip() and not re.match(r"^[\w-]+:", line)]
            self._json({"errors": errors, "warnings": []}, 400 if errors else 200)

        def _preupload(self, repo_id: str):
            if self._repo(repo_id) is None:
                return
            files = json.loads(self._body())["files"]
            self._json({"files": [{"path": f["path"], "uploadMode": "lfs" if _is_lfs(f["path"], f["size"])
                                   else "regular", "shouldIgnore": False} for f in files]})

        def _batch(self, repo_id: str):
            if self._repo(repo_id) is None or self._token() is None:
                return
            objects = []
            for obj in json.loads(self._body())["objects"]:
                oid, size = obj["oid"], int(obj["size"])
                entry = {"oid": oid, "size": size}
                if not (hub.store / oid).exists():
                    upload = {"href": f"{hub.endpoint}/lfs/{oid}"}
                    if size > hub.multipart_above:
                        parts = -(-size // hub.part_size)
                        upload["header"] = {"chunk_size": str(hub.part_size),
                                            **{f"{n:05d}": f"{hub.endpoint}/lfs/{oid}/{n}" for n in range(1, parts + 1)}}
                    entry["actions"] = {"upload": upload}
                objects.append(entry)
            self._json({"transfer": "basic", "objects": objects})

        def _receive(self, target: Path) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > hub.max_body:
                raise ValueError("body too large")
            tmp = target.with_name(target.name + ".tmp")
            with open(tmp, "wb") as f:
                left = length
                while left:
                    piece = self.rfile.read(min(PIECE, left))
                    if not piece:
                        raise ConnectionResetError("client went away")
                    f.write(piece)
                    left -= len(piece)
            tmp.replace(target)

        def _put_object(self, oid: str, part: str | None):
            target = hub.store / (f"{oid}.part{int(part):05d}" if part else f"{oid}.incoming")
            self._receive(target)
            if part:
                return self._send(200, b"", {"ETag": f'"{hashlib.md5(target.read_bytes()).hexdigest()}"'})
            self._seal(target, oid)

        def _complete(self, oid: str):
            payload = json.loads(self._body())
            assembled = hub.store / f"{oid}.incoming"
            with open(assembled, "wb") as out:
                for part in sorted(payload["parts"], key=lambda p: p["partNumber"]):
                    piece = hub.store / f"{oid}.part{part['partNumber']:05d}"
                    with open(piece, "rb") as f:
                        shutil.copyfileobj(f, out)
                    piece.unlink()
            self._seal(assembled, oid)

        def _seal(self, incoming: Path, oid: str):
            if _sha256(incoming) != oid:
                incoming.unlink()
                return self._fail(400, None, "sha256 mismatch")
            incoming.replace(hub.store / oid)
            self._send(200)

        def _commit(self, repo_id: str, revision: str):
            repo = self._repo(repo_id)
            if repo is None:
                return
            if self._token() is None:
                return self._fail(401, None, "Invalid credentials in Authorization header")
            found = self._commit_of(repo, revision)
            if found is None:
                return
            files = dict(found[1].files)
            folder = hub.store / f"commit-{len(repo.commits)}-{time.monotonic_ns()}"
            folder.mkdir()
            for line in self._body().splitlines():
                item = json.loads(line)
                value = item["value"]
                if item["key"] == "file":
                    target = folder / value["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(base64.b64decode(value["content"]))
                    files[value["path"]] = target
                elif item["key"] == "lfsFile":
                    obj = hub.store / value["oid"]
                    if not obj.exists():
                        return self._fail(422, None, f"LFS object {value['oid']} was never uploaded")
                    files[value["path"]] = obj
                elif item["key"] == "deletedFile":
                    files.pop(value["path"], None)
            sha = hub._commit(repo, unquote(revision), files)
            self._json({"commitUrl": f"{hub.endpoint}/{repo_id}/commit/{sha}", "commitOid": sha,
                        "pullRequestUrl": None})

    return Handler
