"""The editor's top bar: preset, Reset, Load…, Save…, Undo and Redo; and the notice under it
that says what the policy's own warning (uniform-2bit) or the core's checks say about this
policy on this model (a preset meant for MoE on a dense model)."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from PySide6.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QLabel, QMessageBox, QPushButton, QToolButton,
                               QWidget)

from studio import settings
from studio.core.errors import StudioError
from studio.core.policy.bit_policy import OWN_POLICY_FILE, PRESET_NAMES, load_policy_file, load_preset
from studio.core.policy.compact import compact
from studio.core.policy.suitability import policy_warnings
from studio.views import shortcuts
from studio.views.icons import icon


def policy_stem(controller) -> str:
    """The short name the open policy goes by in file and folder names: the preset's key (config-i,
    uniform-4bit), a policy file's name without .json, else the policy's own name."""
    base = controller.policy_source.removesuffix(" (edited)")
    if base in PRESET_NAMES:
        return base
    if base.endswith(".json") and base != OWN_POLICY_FILE:
        return Path(base).stem
    return controller.policy.name if controller.policy is not None else "policy"


@functools.cache
def _preset_titles() -> dict[str, str]:
    """Preset key by the policy's own name ("Config-I" -> "config-i"): a model opened from the Hub
    names its policy that way."""
    return {load_preset(name).name: name for name in PRESET_NAMES}


class PolicyBar(QWidget):
    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.preset = QComboBox(toolTip="Start from a preset (Config-I is the role-aware default for MoE models)")
        for name in PRESET_NAMES:
            self.preset.addItem(name, name)
        self.preset.setPlaceholderText("policy file")
        self.preset.activated.connect(lambda _: self.apply_preset(self.preset.currentData()))
        reset = QPushButton(icon("reset"), "Reset", toolTip="Back to the chosen preset")
        reset.clicked.connect(lambda: self.apply_preset(self.preset.currentData() or PRESET_NAMES[0]))
        load = QPushButton(icon("open"), "Load…", toolTip="Load a policy file (.json)")
        load.clicked.connect(self.load_dialog)
        save = QPushButton(icon("save"), "Save…", toolTip="Save this policy to a file (Ctrl+S)")
        save.clicked.connect(self.save_dialog)
        self.undo_action = controller.undo_stack.createUndoAction(self, "Undo")
        self.undo_action.setShortcuts(shortcuts.undo())
        self.undo_action.setIcon(icon("undo"))
        self.redo_action = controller.undo_stack.createRedoAction(self, "Redo")
        self.redo_action.setShortcuts(shortcuts.redo())
        self.redo_action.setIcon(icon("redo"))
        undo_button, redo_button = QToolButton(), QToolButton()
        undo_button.setDefaultAction(self.undo_action)
        redo_button.setDefaultAction(self.redo_action)

        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Preset:"))
        row.addWidget(self.preset)
        row.addWidget(reset)
        row.addSpacing(12)
        row.addWidget(load)
        row.addWidget(save)
        row.addStretch(1)
        row.addWidget(undo_button)
        row.addWidget(redo_button)
        # The box names the preset the policy comes from, whatever changed it: a choice, an open, and
        # Undo or Redo (which put back the source along with the policy).
        controller.policy_named.connect(self._source_named)

    def _source_named(self, source: str) -> None:
        """Show the preset `source` names ("config-i", "config-i (edited)"); a policy from a file
        names none, so the box says "policy file" (Reset then goes back to the first preset)."""
        source = source.removesuffix(" (edited)")
        index = self.preset.findData(_preset_titles().get(source, source))
        self.preset.setCurrentIndex(index)

    def apply_preset(self, name: str) -> None:
        try:
            policy = load_preset(name)
        except StudioError as exc:
            QMessageBox.warning(self, "Preset", str(exc))
            return
        self.controller.replace_policy(policy, f"preset {name}", source=name)
        self.controller.undo_stack.setClean()  # exactly a preset: nothing a quit would lose

    def load_policy(self, path: str) -> bool:
        try:
            policy = load_policy_file(path)
        except StudioError as exc:
            QMessageBox.warning(self, "Load policy", str(exc))
            return False
        self.controller.replace_policy(policy, f"load {Path(path).name}", source=Path(path).name)
        self.controller.undo_stack.setClean()  # exactly the file
        settings.put(settings.LAST_POLICY_DIR, str(Path(path).parent))
        return True

    def save_policy(self, path: str) -> bool:
        """Save the policy compacted (the same decision for every tensor in fewer rules: strokes merged,
        runs of layers as ranges); the editor then shows the rules as saved."""
        c = self.controller
        policy = compact(c.policy, c.project.grid) if c.project is not None else c.policy
        try:
            policy.save(path)
        except StudioError as exc:
            QMessageBox.warning(self, "Save policy", str(exc)[:1].upper() + str(exc)[1:])
            return False
        if policy is not c.policy:
            c.set_policy(policy)
        self.controller.set_source(Path(path).name)
        self.controller.undo_stack.setClean()  # saved: nothing to ask about on quit
        settings.put(settings.LAST_POLICY_DIR, str(Path(path).parent))
        return True

    def load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load policy", settings.start_folder(settings.LAST_POLICY_DIR),
                                              "Policy files (*.json)")
        if path:
            self.load_policy(path)

    def suggested_file(self) -> str:
        """MODEL-POLICY.json in the folder policies were last saved to (else home): demo_model-config-i.json."""
        project = self.controller.project
        name = f"{project.inventory.name}-{policy_stem(self.controller)}" if project is not None else \
            policy_stem(self.controller)
        slug = re.sub(r"[^\w.-]+", "-", name).strip("-.") or "policy"
        return str(Path(settings.start_folder(settings.LAST_POLICY_DIR)) / f"{slug}.json")

    def save_dialog(self) -> bool:
        """Ask for a file and save the policy there; True when it was saved."""
        if self.controller.policy is None:
            return False
        path, _ = QFileDialog.getSaveFileName(self, "Save policy", self.suggested_file(), "Policy files (*.json)")
        return bool(path) and self.save_policy(path if path.endswith(".json") else path + ".json")


class PolicyNotice(QLabel):
    """What the core says about this policy on this model (uniform-2bit's own warning, a preset meant
    for MoE on a dense model), in a band under the bar; hidden when there is nothing to say."""

    def __init__(self, controller, parent=None):
        super().__init__(parent, wordWrap=True, visible=False)
        self.controller = controller
        self.setObjectName("policy_notice")
        self.setStyleSheet("#policy_notice { background: #FFF1C9; color: #5A3E00; border: 1px solid #E0B040;"
                           " border-radius: 3px; padding: 3px 6px; }")
        controller.project_changed.connect(lambda _: self.refresh())
        controller.estimate_changed.connect(lambda _: self.refresh())

    def refresh(self) -> None:
        project = self.controller.project
        notes = policy_warnings(project.plan) if project is not None else []
        self.setText("\n".join(f"\u26a0 {note}" for note in notes))
        self.setVisible(bool(notes))
