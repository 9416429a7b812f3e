"""Unsaved policy edits: ask before they are lost, and keep them through a crash.

The policy counts as edited while the controller's undo stack is not clean
(saving it, or opening a model, marks it clean). Before anything would throw
edits away (quitting, opening another model) `confirm_discard` asks Save /
Discard / Cancel. Every committed edit also writes the policy and its model to
the settings at once (`settings.RECOVERY`), and a clean end clears it: if the
app dies instead, the next launch finds the record and `restore` puts the edits
back as one undoable step. A Hub model is recorded by its repo id and commit
(the cache snapshot holds only its config and tokenizer), a folder by its path;
a record whose model cannot be opened again never blocks a start: its policy
is kept in a file instead (`rescue`).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Callable

import shiboken6
from PySide6.QtCore import QObject, Qt
from PySide6.QtWidgets import QMessageBox

from studio import settings
from studio.core.errors import StudioError
from studio.core.hub.refs import hub_ref
from studio.core.policy.bit_policy import policy_from_dict


class Session(QObject):
    def __init__(self, controller, save_dialog, parent=None):
        """`save_dialog()` asks for a file and saves the policy, True when it did."""
        super().__init__(parent)
        self.controller = controller
        self._save_dialog = save_dialog
        self._stack = controller.undo_stack
        self.question: QMessageBox | None = None  # the open Save / Discard / Cancel box
        self._stack.indexChanged.connect(self._changed)
        self._stack.cleanChanged.connect(self._changed)

    def _changed(self, _value) -> None:
        if shiboken6.isValid(self._stack):  # a stack being destroyed still signals its clear()
            self.record()

    @property
    def edited(self) -> bool:
        return self.controller.project is not None and not self._stack.isClean()

    def record(self) -> None:
        """Write the edited policy where a crash cannot take it, or clear the record when nothing is unsaved."""
        if not self.edited:
            self.clear()
            return
        c = self.controller
        record = {"model": model_reference(c.project), "source": c.policy_source, "policy": c.policy.to_dict()}
        settings.put(settings.RECOVERY, json.dumps(record))
        settings.store().sync()

    def clear(self) -> None:
        settings.put(settings.RECOVERY, "")
        settings.store().sync()

    def confirm_discard(self, parent, title: str, proceed: Callable[[], object]) -> bool:
        """True when nothing unsaved stands in the way. Otherwise False, and a window-modal question
        (Save / Discard / Cancel) is open: `proceed()` runs once the edits are saved or discarded.
        Not a nested event loop: closing the window or a test never hangs on an unanswered box."""
        if not self.edited:
            return True
        count = self._stack.index()
        box = QMessageBox(QMessageBox.Icon.Question, title,
                          f"The policy \u201c{self.controller.policy_source}\u201d has unsaved edits "
                          f"({count} step{'s' if count != 1 else ''}). Save them to a file first?",
                          QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
                          | QMessageBox.StandardButton.Cancel, parent)
        box.setDefaultButton(QMessageBox.StandardButton.Save)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.finished.connect(lambda _: self._answered(box.standardButton(box.clickedButton()), proceed))
        self.question = box
        box.open()
        return False

    def _answered(self, answer, proceed) -> None:
        self.question = None
        if answer == QMessageBox.StandardButton.Save and not self._save_dialog():
            return
        if answer == QMessageBox.StandardButton.Discard:
            self._stack.setClean()  # the user let them go: nothing left to ask about or recover
        if answer in (QMessageBox.StandardButton.Save, QMessageBox.StandardButton.Discard):
            proceed()


def model_reference(project) -> str:
    """What opens this model again: a Hub repo as `org/name@commit`, a folder as its full path."""
    source = project.inventory.source
    return source.card_source if source.remote else str(project.inventory.root.resolve())


def same_model(reference: str, record: dict) -> bool:
    """Whether `reference` (a path or a Hub ref) names the model a recovery record belongs to."""
    if reference == record["model"]:
        return True
    return hub_ref(reference) is None and Path(reference).resolve() == Path(record["model"])


def pending_recovery() -> dict | None:
    """The record a crashed session left: {"model", "source", "policy"}, or None."""
    text = settings.get(settings.RECOVERY)
    if not text:
        return None
    try:
        record = json.loads(text)
        ok = isinstance(record["model"], str) and record["model"] and isinstance(record["policy"], dict)
        return record if ok else None
    except (ValueError, KeyError, TypeError):
        return None


def rescue(record: dict) -> Path | None:
    """Keep a record whose model cannot be opened as a policy file beside the settings, and clear the
    record (so it never stands in the way of a start again). The file's path, or None if none was written."""
    name = re.sub(r"[^\w.-]+", "-", Path(record["model"]).name or "model").strip("-") or "model"
    folder = settings.rescue_folder()
    target = folder / f"recovered-{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(record["policy"], indent=2))
    except OSError:
        return None
    settings.put(settings.RECOVERY, "")
    settings.store().sync()
    return target


def restore(controller, record: dict) -> bool:
    """Put a crashed session's edits back on the open model, as one undoable step."""
    try:
        policy = policy_from_dict(record["policy"], "the recovered policy")
    except StudioError:
        return False
    source = record.get("source") or policy.name
    controller.replace_policy(policy, "recover unsaved edits", source=source)
    return True
