"""Before and after the writing: the destination and disk checks, the read-back of every
written header, the files beside the weights, and the move into place."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

from studio.core.atomic_write import write_text_atomic
from studio.core.quant_error import error_map as quant_errors
from studio.core.convert.resume import MARKER_NAME, RECORD_NAME
from studio.core.errors import StudioError
from studio.core.formatting import human_bytes
from studio.core.model.inventory import read_header
from studio.core.card.model_card import model_card
from studio.core.convert.output_config import copy_extra_files, output_config
from studio.core.policy.plan import Plan
from studio.core.policy.bit_policy import OWN_POLICY_FILE
from studio.core.convert.shard_layout import INDEX_NAME, Layout
from studio.core.validation.config import check_config
from studio.core.validation.json_input import CONFIG_BYTES, read_json
from studio.core.validation.loadable import check_tokenizer_config, tokenizer_files


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


def recover_interrupted_move(out: Path, force: bool) -> list[str]:
    """Tidy up after a --force run killed between its two renames; say what was done.

    `.OUT.old` beside the destination is the folder a --force run was replacing.
    If the destination is there too, the replacement finished and only the
    removal of the old folder was cut short: remove it. If the destination is
    missing, the new folder is still `.OUT.partial` (complete, with its resume
    record): with --force this run finishes the replacement and removes the old
    folder after; without it, the old folder is put back where it was."""
    old = old_path(out)
    if not old.is_dir() or old.is_symlink():
        return []
    if out.exists():
        shutil.rmtree(old)
        return [f"removed {old}, left by an earlier --force run that was stopped after replacing {out.name}."]
    if force:
        return [f"an earlier --force run was stopped while replacing {out.name}; the folder it replaced is "
                f"kept in {old} until the new one is in place."]
    os.replace(old, out)
    return [f"put {out.name} back from {old}: an earlier --force run was stopped while replacing it."]


def old_path(out: Path) -> Path:
    return out.parent / f".{out.name}.old"


def write_extras(project, folder: Path) -> None:
    """The source's tokenizer, chat template and other small files (never code), written at the start
    so the tokenizer is checked before any weight is."""
    copy_extra_files(project.plan.inventory.root, folder)


def check_output(folder: Path) -> None:
    """The finished folder as mlx-lm will read it: config.json valid, tokenizer loadable."""
    config = read_json(folder / "config.json", "output config", CONFIG_BYTES)
    check_config(config, "the output's config.json")
    check_tokenizer_config(folder)
    if not tokenizer_files(folder):
        raise StudioError(f"{folder} has no tokenizer after finishing.")


def finish_folder(project, folder: Path, layout: Layout, errors: dict[str, list[float]] | None,
                  card_note: str = "") -> None:
    """Everything but the weights and the tokenizer; config.json last, so a folder with one is complete.
    The resume record stays until the folder is in place (see `move_into_place`)."""
    plan = project.plan
    if errors is not None:
        quant_errors.write(folder, plan, {k: (v[0], v[1]) for k, v in errors.items()})
    if len(layout.shards) > 1:
        (folder / INDEX_NAME).write_text(json.dumps(layout.index(), indent=2) + "\n")
    (folder / OWN_POLICY_FILE).write_text(plan.policy.to_json())
    card = model_card(plan, project.estimate, plan.inventory.source.card_source)
    (folder / "README.md").write_text(card + (f"\n{card_note}\n" if card_note else ""))
    write_text_atomic(folder / "config.json", json.dumps(output_config(plan), indent=2) + "\n")


def move_into_place(partial: Path, out: Path, force: bool) -> None:
    """Rename the finished folder to `out` (with --force, the old one aside first, removed after);
    then drop the resume record, which a kill before this point still needs."""
    (partial / MARKER_NAME).unlink(missing_ok=True)
    old = old_path(out)
    if out.exists():
        if not force:
            raise StudioError(f"{out} appeared while converting; the result is left in {partial}.")
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
    os.replace(partial, out)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
    (out / RECORD_NAME).unlink(missing_ok=True)
