"""The policy editor: brush palette, the layers-by-roles grid, and the rules list.

Pick a brush (keys 2-8, K keep, F f16, D drop; S or Esc to select) and drag over
the grid. Every stroke, row or column set, preset and file load is one undo
step on the controller's QUndoStack.

The error row: "Show error" turns the grid into a heat map of measured
relative error at each cell's current bits (surveying first if nothing is
measured yet), "Survey" measures it on samples of the weights (on the worker),
"Load errors…" reads a converted model's quant_errors.json, and "Fit to
budget…" proposes bits for a size or a Mac.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QButtonGroup, QComboBox, QFileDialog, QHBoxLayout, QLabel, QMenu, QMessageBox,
                               QProgressBar, QPushButton, QSplitter, QToolButton, QVBoxLayout, QWidget)

from studio import settings
from studio.core.defaults import AFFINE_BITS, DEFAULT_GROUP_SIZE, MODES
from studio.core.errors import StudioError
from studio.core.policy import PRESET_NAMES, Drop, Keep, Quantize, load_policy_file, load_preset
from studio.core.grid import cell_of
from studio.core.grid_paint import apply_stroke, set_column, set_row
from studio.core.quant_error.error_map import ErrorMap
from studio.core.roles import ROLE_BY_KEY
from studio.core.quant_error.error_map import load as load_quant_errors
from studio.views import item_roles, shortcuts
from studio.views.budget_dialog import BudgetDialog
from studio.views.icons import icon
from studio.views.palette import ERROR_SCALE_TIP, action_colour, error_legend_html, swatch_icon, text_on
from studio.views.policy_grid import PolicyGridModel, PolicyGridView
from studio.views.rules_view import RulesView
from studio.views.survey_runner import SurveyRunner
from studio.views.widgets import ElidedLabel

# (label, key, tool): tool is bits for a quantize brush, a Keep/Drop action, or None for select.
TOOLS = (("select", "S", None), *((str(b), str(b), b) for b in AFFINE_BITS),
         ("keep", "K", Keep()), ("f16", "F", Keep("float16")), ("drop", "D", Drop()))


class PolicyEditor(QWidget):
    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.grid_model = PolicyGridModel(controller, self)
        self.grid = PolicyGridView()
        self.grid.setModel(self.grid_model)
        self.rules = RulesView()
        self._base = None  # the policy when the current stroke began

        self.preset = QComboBox(toolTip="Start from a preset (Config-I is the role-aware default)")
        for name in PRESET_NAMES:
            self.preset.addItem(name, name)
        self.preset.activated.connect(lambda _: self.apply_preset(self.preset.currentData()))
        reset = QPushButton(icon("reset"), "Reset", toolTip="Back to the chosen preset")
        reset.clicked.connect(lambda: self.apply_preset(self.preset.currentData()))
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

        top = QHBoxLayout()
        top.addWidget(QLabel("Preset:"))
        top.addWidget(self.preset)
        top.addWidget(reset)
        top.addSpacing(12)
        top.addWidget(load)
        top.addWidget(save)
        top.addStretch(1)
        top.addWidget(undo_button)
        top.addWidget(redo_button)

        self.tools = QButtonGroup(self)
        self.tools.setExclusive(True)
        brushes = QHBoxLayout()
        brushes.setSpacing(2)
        brushes.addWidget(QLabel("Brush:"))
        for i, (label, key, tool) in enumerate(TOOLS):
            button = QToolButton(text=label, checkable=True, autoRaise=False)
            button.setMinimumWidth(40 if len(label) > 2 else 30)
            button.setToolTip(self._tool_tip(label, key, tool))
            if tool is not None:
                colour = action_colour(self._action(tool, DEFAULT_GROUP_SIZE, "affine"))
                button.setStyleSheet(f"QToolButton {{ background: {colour.name()}; color: {text_on(colour).name()};"
                                     f" border: 1px solid #777; border-radius: 3px; padding: 2px 6px; }}"
                                     f" QToolButton:checked {{ border: 3px solid palette(highlight); }}")
            self.tools.addButton(button, i)
            brushes.addWidget(button)
            action = QAction(self, shortcut=QKeySequence(key))
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            action.triggered.connect(lambda _=False, b=button: b.click())
            self.addAction(action)
        escape = QAction(self, shortcut=QKeySequence(Qt.Key.Key_Escape))
        escape.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        escape.triggered.connect(lambda: self.tools.button(0).click())
        self.addAction(escape)
        self.tools.idClicked.connect(self._tool_chosen)
        self.group_size = QComboBox(toolTip="Group size of painted quantize values")
        self.mode = QComboBox(toolTip="Quantization mode of painted values (mx/nv modes fix the bits)")
        for mode in MODES:
            self.mode.addItem(mode, mode)
        self.mode.currentIndexChanged.connect(self._mode_changed)
        self.group_size.currentIndexChanged.connect(lambda _: self._update_brush())
        brushes.addSpacing(10)
        brushes.addWidget(QLabel("Group:"))
        brushes.addWidget(self.group_size)
        brushes.addWidget(QLabel("Mode:"))
        brushes.addWidget(self.mode)
        brushes.addStretch(1)

        errors_row = self._error_row()

        hint = QLabel("Pick a brush, then drag over cells. Shift-click paints a rectangle; right-click a row or "
                      "column header to set all of it. With Select, a click shows that cell's tensors.")
        hint.setWordWrap(True)
        hint.setEnabled(False)

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.grid)
        splitter.addWidget(self.rules)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        self.splitter = splitter

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addLayout(brushes)
        layout.addLayout(errors_row)
        layout.addWidget(hint)
        layout.addWidget(splitter, 1)

        self.grid.stroke_moved.connect(self._stroke_moved)
        self.grid.stroke_finished.connect(self._stroke_finished)
        self.grid.hovered_rule.connect(self.rules.highlight)
        self.grid.cell_clicked.connect(controller.cell_selected.emit)
        self.grid.header_action.connect(self._header_menu)
        controller.project_changed.connect(self._project_changed)
        controller.policy_changed.connect(self._policy_changed)
        controller.unit_selected.connect(self.show_unit)
        controller.errors_changed.connect(self._errors_changed)

        mode = settings.get(settings.PAINT_MODE)
        self.mode.setCurrentIndex(max(0, self.mode.findData(mode)))
        self._mode_changed()
        self.group_size.setCurrentIndex(max(0, self.group_size.findData(settings.get(settings.PAINT_GROUP_SIZE))))
        self.tools.button(0).setChecked(True)

    # ----- measured error -----

    def _error_row(self) -> QHBoxLayout:
        self.survey_runner = SurveyRunner(self.controller, self)
        self.fit_dialog: BudgetDialog | None = None
        self.show_error = QToolButton(text="Show error", checkable=True, icon=icon("evaluate"))
        self.show_error.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.show_error.setToolTip("Colour cells by the measured relative quantization error at their current "
                                   "bits (runs the survey first if nothing is measured)\n\n" + ERROR_SCALE_TIP)
        self.show_error.toggled.connect(self.set_show_error)
        survey = QPushButton("Survey", toolTip="Measure every quantized tensor's error at 2-8 bits on samples "
                                               "of its weights")
        survey.clicked.connect(self.survey_runner.start)
        load = QPushButton("Load errors…", toolTip="Show the errors a conversion measured (quant_errors.json)")
        load.clicked.connect(self.load_errors_dialog)
        fit = QPushButton("Fit to budget…", toolTip="Propose the bits that fit a size or a Mac with the least error")
        fit.clicked.connect(self.open_fit_dialog)
        self.survey_bar = QProgressBar(visible=False, maximumWidth=180)
        self.survey_bar.setRange(0, 1000)
        self.survey_cancel = QToolButton(text="Cancel", visible=False)
        self.survey_cancel.clicked.connect(self.survey_runner.cancel)
        self.error_legend = QLabel(error_legend_html(), visible=False, textFormat=Qt.TextFormat.RichText)
        self.error_legend.setToolTip(ERROR_SCALE_TIP)
        self.error_status = ElidedLabel()  # "surveyed 1,699 tensors in 41 s": cut, never clipped or widening
        self.error_status.setEnabled(False)
        runner = self.survey_runner
        runner.started.connect(lambda: self._surveying(True))
        runner.progress.connect(self._survey_progress)
        runner.finished.connect(
            lambda s: self._surveying(False, f"surveyed {len(s.units):,} tensors ({s.seconds:.1f} s)"))
        runner.stopped.connect(lambda reason: self._surveying(False, reason))
        row = QHBoxLayout()
        for widget in (self.show_error, survey, load, self.survey_bar, self.survey_cancel, self.error_legend):
            row.addWidget(widget)
        row.addSpacing(6)
        row.addWidget(self.error_status, 1)
        row.addWidget(fit)
        return row

    def set_show_error(self, on: bool) -> None:
        if self.show_error.isChecked() != on:
            self.show_error.setChecked(on)  # comes back here through toggled
            return
        self.grid_model.set_show_error(on)
        self.error_legend.setVisible(on)
        if on and self.controller.errors is None:
            self.survey_runner.start()

    def _surveying(self, on: bool, message: str = "") -> None:
        self.survey_bar.setVisible(on)
        self.survey_cancel.setVisible(on)
        self.survey_bar.setValue(0)
        self.error_status.setText("surveying…" if on else message)

    def _survey_progress(self, p) -> None:
        self.survey_bar.setValue(int(1000 * p.fraction))
        self.survey_bar.setFormat(f"{p.done}/{p.total}")

    def _errors_changed(self, errors) -> None:
        self.grid_model.changed()
        if errors is not None and errors.source != "survey":
            self.error_status.setText(f"errors from {errors.source}")

    def load_errors(self, path: str, *, quiet: bool = False) -> bool:
        """Show a quant_errors.json (or the folder holding one); `quiet` says a failure in the error row
        instead of a message box (loads the window does by itself, after a conversion or on open)."""
        try:
            data = load_quant_errors(path)
        except StudioError as exc:
            if quiet:
                self.error_status.setText(str(exc))
            else:
                QMessageBox.warning(self, "Load errors", str(exc))
            return False
        name = f"{Path(path).name}/quant_errors.json" if Path(path).is_dir() else Path(path).name
        self.controller.set_errors(ErrorMap.from_entries(data, name))
        return True

    def load_errors_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load quant_errors.json", settings.get(settings.OUTPUT_DIR),
                                              "Quantization errors (quant_errors.json *.json)")
        if path:
            self.load_errors(path)
            self.set_show_error(True)

    def open_fit_dialog(self) -> BudgetDialog | None:
        if self.controller.project is None:
            return None
        if self.fit_dialog is not None:
            self.fit_dialog.close()
        self.fit_dialog = BudgetDialog(self.controller, self.survey_runner, self)
        self.fit_dialog.open()
        return self.fit_dialog

    def shutdown(self) -> None:
        self.survey_runner.shutdown()

    # ----- brushes -----

    @staticmethod
    def _tool_tip(label, key, tool) -> str:
        if tool is None:
            return f"Select: click a cell to show its tensors ({key} or Esc)"
        if isinstance(tool, int):
            return f"Paint {tool}-bit quantization (key {key})"
        return f"Paint {tool.label()} (key {key})"

    @staticmethod
    def _action(tool, group_size: int, mode: str):
        if isinstance(tool, int):
            if mode == "affine":
                return Quantize(tool, group_size, "affine")
            return Quantize(MODES[mode]["bits"][0], MODES[mode]["group_sizes"][0], mode)
        return tool

    def _mode_changed(self) -> None:
        mode = self.mode.currentData()
        current = self.group_size.currentData()
        self.group_size.blockSignals(True)
        self.group_size.clear()
        for size in MODES[mode]["group_sizes"]:
            self.group_size.addItem(str(size), size)
        self.group_size.setCurrentIndex(max(0, self.group_size.findData(current if current else DEFAULT_GROUP_SIZE)))
        self.group_size.blockSignals(False)
        self._update_brush()

    def _tool_chosen(self, _id: int) -> None:
        self._update_brush()

    def _update_brush(self) -> None:
        tool_id = self.tools.checkedId()
        tool = TOOLS[tool_id][2] if tool_id >= 0 else None
        mode, size = self.mode.currentData(), self.group_size.currentData() or DEFAULT_GROUP_SIZE
        self.grid.brush = None if tool is None else self._action(tool, size, mode)
        self.grid.setCursor(Qt.CursorShape.ArrowCursor if tool is None else Qt.CursorShape.CrossCursor)
        settings.put(settings.PAINT_MODE, mode)
        settings.put(settings.PAINT_GROUP_SIZE, size)

    def set_brush(self, key: str) -> None:
        """Choose a brush by its key ("2".."8", "K", "F", "D", "S")."""
        for i, (_, tool_key, _) in enumerate(TOOLS):
            if tool_key == key.upper():
                self.tools.button(i).click()
                return
        raise KeyError(key)

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

    def _header_menu(self, kind: str, target) -> None:
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
        mode, size = self.mode.currentData(), self.group_size.currentData() or DEFAULT_GROUP_SIZE
        for _label, _key, tool in TOOLS[1:]:
            action = self._action(tool, size, mode)
            menu.addAction(swatch_icon(action_colour(action)), action.label(),
                           lambda a=action: self.set_all(kind, target, a))
        from PySide6.QtGui import QCursor
        menu.popup(QCursor.pos())
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

    # ----- presets and files -----

    def apply_preset(self, name: str) -> None:
        try:
            policy = load_preset(name)
        except StudioError as exc:
            QMessageBox.warning(self, "Preset", str(exc))
            return
        self.controller.replace_policy(policy, f"preset {name}", source=name)
        settings.put(settings.LAST_POLICY, name)

    def load_policy(self, path: str) -> bool:
        try:
            policy = load_policy_file(path)
        except StudioError as exc:
            QMessageBox.warning(self, "Load policy", str(exc))
            return False
        self.controller.replace_policy(policy, f"load {Path(path).name}", source=Path(path).name)
        settings.put(settings.LAST_POLICY, str(path))
        settings.put(settings.LAST_POLICY_DIR, str(Path(path).parent))
        return True

    def save_policy(self, path: str) -> bool:
        policy = self.controller.policy
        try:
            policy.save(path)
        except OSError as exc:
            QMessageBox.warning(self, "Save policy", f"Cannot save the policy to {path}: {exc.strerror}.")
            return False
        self.controller.set_source(Path(path).name)
        self.controller.undo_stack.setClean()  # saved: nothing to ask about on quit
        settings.put(settings.LAST_POLICY, str(path))
        settings.put(settings.LAST_POLICY_DIR, str(Path(path).parent))
        return True

    def load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load policy", settings.get(settings.LAST_POLICY_DIR),
                                              "Policy files (*.json)")
        if path:
            self.load_policy(path)

    def save_dialog(self) -> bool:
        """Ask for a file and save the policy there; True when it was saved."""
        if self.controller.policy is None:
            return False
        path, _ = QFileDialog.getSaveFileName(self, "Save policy", settings.get(settings.LAST_POLICY_DIR),
                                              "Policy files (*.json)")
        return bool(path) and self.save_policy(path if path.endswith(".json") else path + ".json")

    # ----- following the controller -----

    def _project_changed(self, project) -> None:
        self.grid_model.set_project(project)
        self.rules.rules.set_policy(self.controller.policy)
        if project is not None:
            name = self.controller.policy_source
            index = self.preset.findData(name)
            if index >= 0:
                self.preset.setCurrentIndex(index)

    def _policy_changed(self, policy, rect) -> None:
        self.grid_model.changed(rect)
        self.rules.rules.set_policy(policy)

    def show_unit(self, unit: int) -> None:
        project = self.controller.project
        if project is None:
            return
        index = self.grid_model.index_of(*cell_of(project.units[unit]))
        if index.isValid():
            self.grid.setCurrentIndex(index)
            self.grid.scrollTo(index)
            self.rules.highlight(index.data(item_roles.RULE_INDEX))
