"""The policy editor: the layers-by-roles grid and the rules list, with the bars around them.

The bars are their own modules (views/policy_bar.py: presets, files, undo;
views/brush_bar.py: brushes; views/error_row.py: measured error). This module
wires them to the grid: strokes, keyboard painting and header menus become
policy changes, one undo step each on the controller's QUndoStack.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QCursor
from PySide6.QtWidgets import QLabel, QMenu, QSplitter, QVBoxLayout, QWidget

from studio.core.policy.grid import cell_of
from studio.core.policy.grid_paint import apply_stroke, set_column, set_row
from studio.core.model.roles import ROLE_BY_KEY
from studio.core.policy.suitability import rules_matching_nothing
from studio.views import item_roles
from studio.views.brush_bar import BrushBar
from studio.views.error_row import ErrorRow
from studio.views.palette import action_colour, swatch_icon
from studio.views.policy_bar import PolicyBar, PolicyNotice
from studio.views.grid_view import PolicyGridView
from studio.views.policy_grid import PolicyGridModel
from studio.views.rules_view import RulesView


def select_hint() -> str:
    return ("<b>Selecting:</b> a click or Space shows a cell's tensors in the tree. Pick a brush (keys 2-8, K, F, "
            "D) to paint.")


def paint_hint(label: str) -> str:
    return (f"<b>Painting {label}:</b> drag over cells, or use the arrows (Shift: a block) and Space. "
            "Right-click or the Menu key sets a whole row or column.")


class SteadyHint(QLabel):
    """A wrapping label as tall as the tallest of the texts it shows, at any width: switching the brush
    never moves the grid under the pointer."""

    def __init__(self, texts, parent=None):
        super().__init__(parent, wordWrap=True, textFormat=Qt.TextFormat.RichText)
        self.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)  # a short text reads from the top
        self._probe = QLabel(wordWrap=True, textFormat=Qt.TextFormat.RichText)
        self._texts = texts

    def heightForWidth(self, width: int) -> int:
        heights = []
        for text in self._texts:
            self._probe.setText(text)
            heights.append(self._probe.heightForWidth(width))
        return max(heights + [super().heightForWidth(width)])


class PolicyEditor(QWidget):
    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.grid_model = PolicyGridModel(controller, self)
        self.grid = PolicyGridView()
        self.grid.setModel(self.grid_model)
        self.rules = RulesView()
        self._base = None  # the policy when the current stroke began
        self._menu: QMenu | None = None  # the row/column menu shown last

        self.bar = PolicyBar(controller, self)
        self.notice = PolicyNotice(controller, self)
        self.brushes = BrushBar(self)
        self.addActions(self.brushes.key_actions)  # brush keys work wherever the editor has focus
        self.brushes.brush_changed.connect(self._brush_changed)
        self.errors = ErrorRow(controller, self)
        self.errors.show_error_changed.connect(self.grid_model.set_show_error)
        self.errors.sensitivity_changed.connect(self.grid_model.set_sensitivity)
        controller.errors_changed.connect(lambda _: self.grid_model.changed())

        # What the brush does now, in words, on a line that wraps (never cut to "sel…" in the brush bar).
        self.hint = SteadyHint((select_hint(), paint_hint("8-bit g128 mxfp8")))
        self.hint.setEnabled(False)

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.grid)
        splitter.addWidget(self.rules)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        self.splitter = splitter

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        for widget in (self.bar, self.notice, self.brushes, self.errors, self.hint):
            layout.addWidget(widget)
        layout.addWidget(splitter, 1)

        self.grid.stroke_moved.connect(self._stroke_moved)
        self.grid.stroke_finished.connect(self._stroke_finished)
        self.grid.hovered_rule.connect(self.rules.highlight)
        self.grid.cell_clicked.connect(controller.cell_selected.emit)
        self.grid.header_action.connect(self._header_menu)
        self.grid.cell_menu.connect(self._cell_menu)
        controller.project_changed.connect(self._project_changed)
        controller.policy_changed.connect(self._policy_changed)
        controller.unit_selected.connect(self.show_unit)
        self._brush_changed(self.brushes.brush())

    # ----- what the window calls -----

    @property
    def survey_runner(self):
        return self.errors.survey_runner

    @property
    def undo_action(self):
        return self.bar.undo_action

    @property
    def redo_action(self):
        return self.bar.redo_action

    def set_brush(self, key: str) -> None:
        self.brushes.set_brush(key)

    def set_show_error(self, on: bool) -> None:
        self.errors.set_show_error(on)

    def load_errors(self, path: str, *, quiet: bool = False) -> bool:
        return self.errors.load_errors(path, quiet=quiet)

    def load_errors_dialog(self) -> None:
        self.errors.load_errors_dialog()

    def open_fit_dialog(self):
        return self.errors.open_fit_dialog()

    def save_dialog(self) -> bool:
        return self.bar.save_dialog()

    def load_dialog(self) -> None:
        self.bar.load_dialog()

    def shutdown(self) -> None:
        self.errors.shutdown()

    def _brush_changed(self, brush) -> None:
        self.hint.setText(select_hint() if brush is None else paint_hint(brush.label()))
        self.grid.brush = brush
        self.grid.setCursor(Qt.CursorShape.ArrowCursor if brush is None else Qt.CursorShape.CrossCursor)

    # ----- strokes and sets -----

    def _stroke_moved(self, stroke: dict) -> None:
        if self._base is None:
            self._base = self.controller.policy
        self.controller.preview(apply_stroke(self._base, stroke, self.controller.project.grid))

    def _stroke_finished(self, stroke: dict, rect: tuple) -> None:
        base = self._base if self._base is not None else self.controller.policy
        self._base = None
        after = apply_stroke(base, stroke, self.controller.project.grid)
        self.controller.policy = base
        if after is base:
            self.controller.set_policy(base, rect)
            return
        cells = len(stroke)
        self.controller.replace_policy(after, f"paint {cells} cell{'s' if cells != 1 else ''}", rect=rect)

    def _header_menu(self, kind: str, target, at=None) -> None:
        """The "Set every … to" menu of a row or column header, at the mouse or at `at` (global)."""
        menu = QMenu(self)
        if kind == "column":
            what = f"every layer of {ROLE_BY_KEY[target].label}" if target in ROLE_BY_KEY else str(target)
        else:
            what = f"every role {'of ' if target is not None else ''}{self.controller.project.grid.row_name(target)}"
        title = menu.addAction(f"Set {what} to")  # a plain title: Fusion draws sections flush with the edge
        title.setEnabled(False)
        font = title.font()
        font.setBold(True)
        title.setFont(font)
        menu.addSeparator()
        for action in self.brushes.paint_actions():
            menu.addAction(swatch_icon(action_colour(action)), action.label(),
                           lambda a=action: self.set_all(kind, target, a))
        self._popup(menu, QCursor.pos() if at is None else at)

    def _cell_menu(self, role: str, layer, at) -> None:
        """The Menu key (or a right-click) on a cell: set its whole row or its whole column."""
        menu = QMenu(self)
        grid = self.controller.project.grid
        for kind, target, title in (
                ("column", role, f"Set every layer of {ROLE_BY_KEY[role].label} to"),
                ("row", layer, f"Set every role {'of ' if layer is not None else ''}{grid.row_name(layer)} to")):
            submenu = menu.addMenu(title)
            for action in self.brushes.paint_actions():
                submenu.addAction(swatch_icon(action_colour(action)), action.label(),
                                  lambda k=kind, t=target, a=action: self.set_all(k, t, a))
        self._popup(menu, at)

    def _popup(self, menu: QMenu, at) -> None:
        """One menu at a time: a platform that sends the Menu key both as a key and as a context-menu
        event must not stack two."""
        if self._menu is not None and self._menu.isVisible():
            self._menu.close()
        menu.popup(at)
        self._menu = menu

    def set_all(self, kind: str, target, action) -> None:
        model, grid = self.grid_model, self.controller.project.grid
        if kind == "row":
            row = model.layers.index(target)
            roles = [r for c, r in enumerate(model.roles) if model.has_units(row, c)]
            policy = set_row(self.controller.policy, target, roles, action, grid)
            rect = (row, 0, row, len(model.roles) - 1)
        else:
            policy = set_column(self.controller.policy, target, action, grid)
            col = model.roles.index(target)
            rect = (0, col, len(model.layers) - 1, col)
        self.controller.replace_policy(policy, f"set {kind} to {action.label()}", rect=rect)

    # ----- following the controller -----

    def _project_changed(self, project) -> None:
        self.grid_model.set_project(project)
        self._show_rules(self.controller.policy)

    def _show_rules(self, policy) -> None:
        project = self.controller.project
        idle = rules_matching_nothing(policy, project.grid) if project is not None and policy is not None else ()
        self.rules.rules.set_policy(policy, idle)

    def _policy_changed(self, policy, rect) -> None:
        self.grid_model.changed(rect)
        self._show_rules(policy)

    def show_unit(self, unit: int) -> None:
        project = self.controller.project
        if project is None:
            return
        index = self.grid_model.index_of(*cell_of(project.units[unit]))
        if index.isValid():
            self.grid.setCurrentIndex(index)
            self.grid.scrollTo(index)
            self.rules.highlight(index.data(item_roles.RULE_INDEX))
