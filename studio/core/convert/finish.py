"""Before and after the writing: the destination and disk checks, the read-back of every
written header, the files beside the weights, and the move into place."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

from studio.core.quant_error import error_map as quant_errors
from studio.core.convert.resume import MARKER_NAME, RECORD_NAME
from studio.core.errors import StudioError
from studio.core.formatting import human_bytes
from studio.core.inventory import read_header
from studio.core.model_card import model_card
from studio.core.output_config import copy_extra_files, output_config
from studio.core.plan import Plan
from studio.core.policy import OWN_POLICY_FILE
from studio.core.shard_layout import INDEX_NAME, Layout


def check_destination(plan: Plan, out: Path, force: bool) -> None:
    source = plan.inventory.root.resolve()
    target = out.resolve()
    if target == source or source.is_relative_to(target) or target.is_relative_to(source):
        raise StudioError(f"the output folder {out} must not be the source model's folder, inside it or around it.")
    if out.exists() and not out.is_dir():
        raise StudioError(f"{out} exists and is not a folder.")
    if out.exists() and not force:
        raise StudioError(f"{out} already exists; choose another folder or replace it with --force.")


def check_disk(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise StudioError(
            f"not enough free disk space in {folder}: the conversion needs {human_bytes(needed)} more "
            f"and {human_bytes(free)} is free."
        )


def disk_error(exc: OSError, folder: Path) -> StudioError:
    if exc.errno == errno.ENOSPC:
        return StudioError(f"the disk holding {folder} is full; free some space and run the conversion again "
                           "to resume.")
    return StudioError(f"cannot write to {folder}: {exc.strerror or exc}.")


def verify(folder: Path, layout: Layout, expected_bytes: int) -> None:
    """Read back every written header and size; they must be the plan's, to the byte."""
    total = 0
    for spec in layout.shards:
        path = folder / spec.filename
        if path.stat().st_size != spec.file_bytes:
            raise StudioError(f"{spec.filename} holds {path.stat().st_size} bytes, not the {spec.file_bytes} planned.")
        entries = {e.name: e for e in read_header(path)}
        for slot in spec.slots:
            entry = entries.get(slot.name)
            if entry is None or entry.start != slot.offset or entry.nbytes != slot.nbytes or \
                    entry.shape != slot.shape or entry.dtype != slot.dtype:
                raise StudioError(f"{spec.filename}: tensor {slot.name} does not match the plan.")
            total += entry.nbytes
    if total != expected_bytes:
        raise RuntimeError(f"wrote {total} bytes of tensor data, the estimate says {expected_bytes}")


def finish_folder(project, folder: Path, layout: Layout, errors: dict[str, list[float]] | None) -> None:
    """Everything but the weights; config.json last, so a folder with one is complete."""
    plan = project.plan
    if errors is not None:
        quant_errors.write(folder, plan, {k: (v[0], v[1]) for k, v in errors.items()})
    if len(layout.shards) > 1:
        (folder / INDEX_NAME).write_text(json.dumps(layout.index(), indent=2) + "\n")
    copy_extra_files(plan.inventory.root, folder)
    (folder / OWN_POLICY_FILE).write_text(plan.policy.to_json())
    (folder / "README.md").write_text(model_card(plan, project.estimate, plan.inventory.source.card_source))
    (folder / RECORD_NAME).unlink(missing_ok=True)
    (folder / MARKER_NAME).unlink(missing_ok=True)
    tmp = folder / "config.json.tmp"
    tmp.write_text(json.dumps(output_config(plan), indent=2) + "\n")
    os.replace(tmp, folder / "config.json")


def move_into_place(partial: Path, out: Path, force: bool) -> None:
    if not out.exists():
        os.replace(partial, out)
        return
    if not force:
        raise StudioError(f"{out} appeared while converting; the result is left in {partial}.")
    old = out.parent / f".{out.name}.old"
    if old.exists():
        shutil.rmtree(old)
    os.replace(out, old)
    os.replace(partial, out)
    shutil.rmtree(old, ignore_errors=True)
