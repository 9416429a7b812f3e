"""A model repo on the Hub as a source: open it from headers, convert it by byte ranges.

The inventory's `root` is the revision's snapshot folder in the standard
huggingface_hub cache, holding config.json and the tokenizer files (what the
converter copies beside its output). The weights stay on the Hub and are
read by range, unless `keep_local_copy` (the `--keep-source` option) has
downloaded them into that same snapshot folder, after which every reader of
this revision reads them from disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from studio.core.model.dequantize import SourceReader
from studio.core.hub.ranged import RangeFetcher
from studio.core.hub.refs import RepoRef, endpoint
from studio.core.hub.remote import RemoteRepo, download, resolve, shard_headers, shard_names, small_files
from studio.core.model.inventory import Inventory, RawTensor, build_inventory, load_config, parse_header, read_header


class HubReader(SourceReader):
    """The converter's reader for a Hub source: the same rows, fetched by HTTP range."""

    def __init__(self, root: Path, fetcher: RangeFetcher):
        super().__init__(root)
        self.fetcher = fetcher

    def read_into(self, raw: RawTensor, begin: int, buffer: memoryview) -> None:
        self.fetcher.read_into(raw.shard, begin, buffer)

    def close(self) -> None:
        super().close()
        self.fetcher.close()


class HubSource:
    remote = True  # its weights are on the Hub (or, after --keep-source, in the download cache)

    def __init__(self, remote: RemoteRepo, root: Path, shards: list[str]):
        self.remote, self.root, self.shards = remote, root, shards

    @property
    def repo_id(self) -> str:
        return self.remote.ref.repo_id

    @property
    def commit(self) -> str:
        return self.remote.commit

    @property
    def name(self) -> str:
        return self.repo_id.rsplit("/", 1)[-1]

    @property
    def label(self) -> str:
        revision = self.remote.ref.revision or "main"
        short = self.commit[:12]
        return f"{self.repo_id}@{revision}" + ("" if revision == self.commit else f" ({short})")

    @property
    def card_source(self) -> str:
        """Repo and commit: also the argument that converts exactly this revision again."""
        return f"{self.repo_id}@{self.commit}"

    @property
    def base_model(self) -> str:
        return self.repo_id

    @property
    def url(self) -> str:
        return f"{endpoint()}/{self.repo_id}"

    def missing_locally(self) -> list[str]:
        """Shards not (wholly) in the local cache."""
        out = []
        for name in self.shards:
            path = self.root / name
            if not path.is_file() or path.stat().st_size != self.remote.sizes[name]:
                out.append(name)
        return out

    def reader(self) -> SourceReader:
        if not self.missing_locally():
            return SourceReader(self.root)  # kept by an earlier --keep-source: read from disk
        return HubReader(self.root, self.remote.fetcher(self.shards))

    def identity(self, shards: list[str]) -> str:
        """The repo and commit: the same whether its bytes come over HTTP or from the cache."""
        return f"hub:{self.repo_id}@{self.commit}:" + ";".join(f"{n}:{self.remote.sizes[n]}" for n in shards)


def open_hub_inventory(ref: RepoRef) -> Inventory:
    """config.json, tokenizer files and every shard's header; nothing else is downloaded."""
    remote = resolve(ref)
    root = small_files(remote)
    config = load_config(root)
    names, weight_map = shard_names(remote, root)
    source = HubSource(remote, root, names)
    if not source.missing_locally():  # kept by --keep-source
        headers = {n: read_header(root / n) for n in names}
    else:
        blobs = shard_headers(remote, names)
        headers = {n: parse_header(blobs[n][8:], remote.sizes[n], n) for n in names}
    return build_inventory(root, config, headers, weight_map, source)


def keep_local_copy(source: HubSource, progress: Callable[[str, int, int], None] | None = None) -> int:
    """Download the shards still missing into the huggingface_hub cache (resumable); returns their bytes."""
    missing = source.missing_locally()
    total = sum(source.remote.sizes[n] for n in missing)
    done = 0
    for name in missing:
        if progress is not None:
            progress(name, done, total)
        download(source.remote, name)
        done += source.remote.sizes[name]
    if progress is not None:
        progress("", done, total)
    return total
