"""Unsaved policy edits: ask before they are lost, and keep them through a crash.

The policy counts as edited while the controller's undo stack is not clean
(saving it, or opening a model, marks it clean). Before anything would throw
edits away (quitting, opening another model) `confirm_discard` asks Save /
Discard / Cancel. Every committed edit also writes the policy and its model to
the settings at once (`settings.RECOVERY`), and a clean end clears it: if the
app dies instead, the next launch finds the record and `restore` puts the edits
back as one undoable step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import shiboken6
from PySide6.QtCore import QObject, Qt
from PySide6.QtWidgets import QMessageBox

from studio import settings
from studio.core.errors import StudioError
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
        record = {"model": str(c.project.inventory.root.resolve()), "source": c.policy_source,
                  "policy": c.policy.to_dict()}
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


def pending_recovery() -> dict | None:
    """The record a crashed session left: {"model", "source", "policy"}, or None."""
    text = settings.get(settings.RECOVERY)
    if not text:
        return None
    try:
        record = json.loads(text)
        return record if Path(record["model"]).is_dir() and isinstance(record["policy"], dict) else None
    except (ValueError, KeyError, TypeError):
        return None


def restore(controller, record: dict) -> bool:
    """Put a crashed session's edits back on the open model, as one undoable step."""
    try:
        policy = policy_from_dict(record["policy"], "the recovered policy")
    except StudioError:
        return False
    source = record.get("source") or policy.name
    controller.replace_policy(policy, "recover unsaved edits", source=source)
    return True
