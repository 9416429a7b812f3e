"""One revision of a model repo on the Hub: its commit, its files, and the few bytes opening needs.

`resolve(ref)` asks the Hub's API for the revision's commit hash and file
list (one request) and pins every later request to that commit, so a branch
that moves while we read cannot mix two versions. `small_files` downloads
config.json, the index and the tokenizer files into the standard
huggingface_hub cache; `shard_headers` reads each shard's safetensors header
with HTTP range requests (the first 100 kB, then the rest if the header is
longer), as `huggingface_hub.get_safetensors_metadata` does.
"""

from __future__ import annotations

import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from studio.core.errors import StudioError
from studio.core.hub.ranged import RangeFetcher
from studio.core.hub.refs import RepoRef, endpoint, hub_errors

INDEX_NAME = "model.safetensors.index.json"
FIRST_BYTES = 100_000
MAX_HEADER_BYTES = 256 * 1024 * 1024
# Non-weight files the converter copies beside its output (as output_config.extra_files picks them).
_SMALL_SUFFIXES = (".json", ".jinja", ".txt", ".model", ".tiktoken", ".py")
_OTHER_WEIGHTS = {".bin": ".bin (PyTorch)", ".pt": ".pt (PyTorch)", ".pth": ".pth (PyTorch)",
                  ".gguf": "GGUF", ".h5": ".h5 (Keras)", ".msgpack": ".msgpack (Flax)", ".onnx": "ONNX"}


@dataclass
class RemoteRepo:
    ref: RepoRef
    commit: str
    sizes: dict[str, int]  # every file of the revision -> bytes
    headers: dict[str, str] = field(repr=False, default_factory=dict)  # user agent and token: never print these

    @property
    def what(self) -> str:
        return f"{self.ref.repo_id}@{self.commit[:12]}"

    def url(self, name: str) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(self.ref.repo_id, name, revision=self.commit, endpoint=endpoint())

    def fetcher(self, names) -> RangeFetcher:
        return RangeFetcher({n: self.url(n) for n in names}, self.headers, what=self.what)


def resolve(ref: RepoRef) -> RemoteRepo:
    """The revision's commit and files; one clear sentence if the repo cannot be used."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import build_hf_headers

    with hub_errors(ref):
        info = HfApi(endpoint=endpoint()).model_info(ref.repo_id, revision=ref.revision, files_metadata=True)
        headers = build_hf_headers()
    sizes = {s.rfilename: int(s.size or 0) for s in info.siblings or []}
    top = [n for n in sizes if "/" not in n]
    if not any(n.endswith(".safetensors") for n in top):
        kinds = sorted({label for n in sizes for suffix, label in _OTHER_WEIGHTS.items() if n.endswith(suffix)})
        only = f" (its weights are {' and '.join(kinds)} only)" if kinds else ""
        raise StudioError(f"{ref} has no safetensors weights{only}; the studio reads safetensors checkpoints.")
    if "config.json" not in sizes:
        raise StudioError(f"{ref} has no config.json; a model repo needs one.")
    return RemoteRepo(ref, info.sha, sizes, headers)


def download(remote: RemoteRepo, name: str) -> Path:
    """One file of the revision, through the standard huggingface_hub cache (resumes a partial download)."""
    from huggingface_hub import hf_hub_download

    with hub_errors(remote.ref, "download from"):
        return Path(hf_hub_download(remote.ref.repo_id, name, revision=remote.commit, endpoint=endpoint()))


def small_files(remote: RemoteRepo) -> Path:
    """Download config.json, the index and the tokenizer files; returns the cache's snapshot folder."""
    names = [n for n in remote.sizes if "/" not in n and n != "README.md" and
             (n.endswith(_SMALL_SUFFIXES) or n == "tokenizer.model")]
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="configi-hub-small") as pool:
        paths = list(pool.map(lambda n: download(remote, n), names))
    return paths[names.index("config.json")].parent


def shard_names(remote: RemoteRepo, snapshot: Path) -> tuple[list[str], dict[str, str] | None]:
    """The shards named by the index (checked as a local folder's is) and its weight map,
    or every top-level .safetensors file and None."""
    from studio.core.model.inventory import _index_weight_map

    if INDEX_NAME in remote.sizes:
        weight_map = _index_weight_map(snapshot / INDEX_NAME, snapshot)
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if n not in remote.sizes]
        if missing:
            raise StudioError(f"{remote.ref} is missing shard {missing[0]} named in its index.")
        return names, weight_map
    return sorted(n for n in remote.sizes if "/" not in n and n.endswith(".safetensors")), None


def shard_headers(remote: RemoteRepo, names: list[str]) -> dict[str, bytes]:
    """Per shard: its first 8 + header-length bytes (the length prefix and the JSON header)."""
    fetcher = remote.fetcher(names)

    def one(name: str) -> bytes:
        size = remote.sizes[name]
        if size < 8:
            raise StudioError(f"{name} in {remote.what} is too short to be a safetensors file ({size} bytes).")
        first = bytes(fetcher.read(name, 0, min(size, FIRST_BYTES)))
        (header_len,) = struct.unpack("<Q", first[:8])
        if header_len > min(size - 8, MAX_HEADER_BYTES):
            raise StudioError(f"{name} in {remote.what} claims a {header_len}-byte header but holds {size} bytes; "
                              "it is truncated or not a safetensors file.")
        if 8 + header_len <= len(first):
            return first[:8 + header_len]
        return first + bytes(fetcher.read(name, len(first), 8 + header_len - len(first)))

    try:
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="configi-hub-header") as pool:
            with hub_errors(remote.ref, "read the headers of"):
                return dict(zip(names, pool.map(one, names)))
    finally:
        fetcher.close()
