"""Publish a converted folder to the Hub: check it is a finished studio output, then upload it.

    check_output(folder) -> list[Path]           the files to upload, or one sentence why not
    publish(folder, "org/name", private=False, progress=None, cancel=None) -> PublishResult

The repo is created if needed. Each weight file is uploaded on its own with
huggingface_hub's `preupload_lfs_files` (xet when hf_xet is installed, else
LFS, multipart for big files); both are content-addressed, so a publish that
was cancelled, killed or cut off resumes by running it again: files the Hub
already holds are not sent twice (xet also skips the chunks of a half-sent
file). One commit at the end adds every file, so the repo never shows a
model card and config without all of its weights.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from studio.core.cancel import CancelToken
from studio.core.errors import StudioError
from studio.core.hub.refs import endpoint, hub_errors, parse_ref
from studio.core.policy.bit_policy import OWN_POLICY_FILE

_REQUIRED = ("config.json", OWN_POLICY_FILE, "README.md")
_UNFINISHED = ("CONVERSION_INCOMPLETE.txt", ".configi-convert.json")  # convert.resume's marker and record


class PublishCancelled(StudioError):
    """The user cancelled; what was uploaded stays on the Hub and a rerun skips it."""


@dataclass
class PublishResult:
    url: str
    commit: str
    files: int
    bytes_total: int


def check_output(folder: str | os.PathLike) -> list[Path]:
    """The files of `folder` if it is a complete studio output whose shards match their headers."""
    from studio.core.model.inventory import open_model

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise StudioError(f"{folder} is not a folder.")
    unfinished = [n for n in _UNFINISHED if (folder / n).exists()]
    if unfinished or folder.name.endswith(".partial"):
        raise StudioError(f"{folder} is an unfinished conversion; run the conversion again to finish it first.")
    missing = [n for n in _REQUIRED if not (folder / n).is_file()]
    if missing:
        raise StudioError(f"{folder} is not a Config-I Studio output (it has no {missing[0]}); "
                          "only converted folders are published.")
    open_model(folder)  # every shard's header against its size, the index against the tensors
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def publish(folder: str | os.PathLike, repo_id: str, *, private: bool = False,
            progress: Callable[[str, int, int], None] | None = None,
            cancel: CancelToken | None = None) -> PublishResult:
    """Create `repo_id` if needed and upload `folder`; `progress(file, bytes_done, bytes_total)`."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.utils import get_token

    ref = parse_ref(repo_id)
    if ref is None or ref.revision:
        raise StudioError(f"{repo_id!r} is not a Hub repo id; use org/name.")
    files = check_output(folder)
    if get_token() is None:
        raise StudioError("publishing needs a Hugging Face token with write access: log in with "
                          "`hf auth login` or set HF_TOKEN.")
    api = HfApi(endpoint=endpoint())
    sizes = {p: p.stat().st_size for p in files}
    total = sum(sizes.values())
    weights = [p for p in files if p.suffix == ".safetensors"]
    operations = {p: CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p)) for p in files}
    done = 0

    def tell(name: str, *, last: bool = False) -> None:
        if progress is not None:
            progress(name, done, total)
        if not last and cancel is not None and cancel.cancelled:
            raise PublishCancelled(f"publishing cancelled; run it again to resume: files already on the Hub "
                                   "are not sent again.")

    # huggingface_hub's LFS upload hands its HTTP client (httpx2 from 2.0) a file as `data=`, which it deprecates;
    # the warning is about their code, not anything the user can act on.
    warnings.filterwarnings("ignore", message=r"Use 'content=<\.\.\.>'", category=DeprecationWarning)
    with hub_errors(ref.repo_id, "publish to"):
        tell("")
        api.create_repo(ref.repo_id, private=private, exist_ok=True)
        for path in weights:
            tell(path.name)
            api.preupload_lfs_files(ref.repo_id, additions=[operations[path]])
            done += sizes[path]
        tell("")
        done = total
        info = api.create_commit(ref.repo_id, operations=list(operations.values()),
                                 commit_message=f"Upload {Path(folder).name}, converted by Config-I Studio")
        tell("", last=True)
    return PublishResult(f"{endpoint()}/{ref.repo_id}", info.oid, len(files), total)
