"""The open project as the window sees it: one object every panel listens to.

Edits set the policy at once (the grid and the rules view show it immediately)
and schedule one recompute of the plan and estimate; edits that arrive within
`THROTTLE_MS` share that recompute, so a fast drag costs one estimate per tick,
not one per cell.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from studio.core.policy.bit_policy import Policy
from studio.core.project import Project

THROTTLE_MS = 35


class ProjectController(QObject):
    project_changed = Signal(object)        # Project | None: a model was opened or closed
    policy_changed = Signal(object, object)  # Policy, touched grid rectangle (r0, c0, r1, c1) or None
    estimate_changed = Signal(object)       # Estimate: plan and estimate follow the policy
    unit_selected = Signal(int)             # a unit was selected in the tree
    cell_selected = Signal(object, object)  # (role, layer) selected in the grid; (None, None) clears
    policy_named = Signal(str)              # the policy's name or file, for the status bar
    errors_changed = Signal(object)         # ErrorMap | None: measured errors (survey or quant_errors.json)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.project: Project | None = None
        self.policy: Policy | None = None
        self.policy_source = ""
        self.errors = None   # ErrorMap shown by the grid's heat map and the tree's Error column
        self.survey = None   # the latest Survey (errors at every bit width: what fitting needs)
        self.undo_stack = QUndoStack(self)
        self._timer = QTimer(self, singleShot=True, interval=THROTTLE_MS)
        self._timer.timeout.connect(self.flush)
        self.recomputes = 0

    def set_project(self, project: Project | None, source: str = "") -> None:
        self._timer.stop()
        self.undo_stack.clear()
        self.project = project
        self.policy = project.policy if project else None
        self.policy_source = source or (self.policy.name if self.policy else "")
        self.errors = self.survey = None
        self.project_changed.emit(project)
        self.errors_changed.emit(None)
        if project is not None:
            self.estimate_changed.emit(project.estimate)
            self.policy_named.emit(self.policy_source)

    @property
    def num_layers(self) -> int:
        return self.project.num_layers if self.project else 0

    def set_policy(self, policy: Policy, rect=None, *, immediate: bool = False) -> None:
        if self.project is None:
            return
        self.policy = policy
        self.policy_changed.emit(policy, rect)
        if immediate:
            self.flush()
        elif not self._timer.isActive():
            self._timer.start()

    def preview(self, policy: Policy) -> None:
        """A policy shown while a stroke is under way: the estimate follows it
        (throttled); the grid shows the stroke itself and commits it with one command."""
        if self.project is None:
            return
        self.policy = policy
        if not self._timer.isActive():
            self._timer.start()

    def flush(self) -> None:
        """Recompute now if an edit is waiting."""
        self._timer.stop()
        if self.project is None or self.project.policy is self.policy:
            return
        estimate = self.project.set_policy(self.policy)
        self.recomputes += 1
        self.estimate_changed.emit(estimate)

    def replace_policy(self, policy: Policy, text: str, source: str | None = None, rect=None) -> None:
        """An undoable change of the whole policy (preset, file, reset) or of a rectangle."""
        if self.project is None or policy is self.policy:
            return
        self.undo_stack.push(PolicyCommand(self, self.policy, policy, text, rect, source))

    def set_errors(self, errors, survey=None) -> None:
        """Show `errors` (an ErrorMap); a `survey` also becomes the one fitting uses."""
        self.errors = errors
        if survey is not None:
            self.survey = survey
        self.errors_changed.emit(errors)

    def set_source(self, source: str) -> None:
        self.policy_source = source
        self.policy_named.emit(source)


class PolicyCommand(QUndoCommand):
    """One undo step: a stroke, a row or column set, a preset or file."""

    def __init__(self, controller: ProjectController, before: Policy, after: Policy, text: str,
                 rect=None, source: str | None = None):
        super().__init__(text)
        self.controller, self.before, self.after, self.rect = controller, before, after, rect
        self.source, self.before_source = source, controller.policy_source

    def redo(self) -> None:
        self.controller.set_policy(self.after, self.rect)
        if self.source is not None:
            self.controller.set_source(self.source)
        elif self.controller.policy_source and not self.controller.policy_source.endswith("(edited)"):
            self.controller.set_source(self.controller.policy_source + " (edited)")

    def undo(self) -> None:
        self.controller.set_policy(self.before, self.rect)
        self.controller.set_source(self.before_source)
