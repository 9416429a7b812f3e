"""The error row under the brushes: measured quantization error on the grid.

"Show error" turns the grid into a heat map of the relative error at each
cell's current bits (surveying first if nothing is measured yet), "Survey"
measures it on samples of the weights (on the worker), "Load errors…" reads a
converted model's quant_errors.json, "Sensitivity" runs the calibration pass
(on the worker; cached) and shows each cell's output-space sensitivity as the
heat map instead, and "Fit to budget…" proposes bits for a size or a Mac. The status ("errors from
out/quant_errors.json") has a line of its own, with the heat map's legend at its end, so it is never
squeezed to "err…" and the legend never widens the window.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QMessageBox, QProgressBar, QPushButton,
                               QToolButton, QVBoxLayout, QWidget)

from studio import settings
from studio.core.errors import StudioError
from studio.core.quant_error.error_map import ErrorMap
from studio.core.quant_error.error_map import load as load_quant_errors
from studio.views.budget_dialog import BudgetDialog
from studio.views.icons import icon
from studio.views.palette import ERROR_SCALE_TIP, SENSITIVITY_SCALE_TIP, error_legend_html
from studio.views.sensitivity_runner import SensitivityRunner
from studio.views.survey_runner import SurveyRunner
from studio.views.widgets import ElidedLabel


class ErrorRow(QWidget):
    show_error_changed = Signal(bool)
    sensitivity_changed = Signal(object)  # {(role, layer): {bits: relative output error}} to show, or None

    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.survey_runner = SurveyRunner(controller, self)
        self.fit_dialog: BudgetDialog | None = None
        self.show_error = QToolButton(text="Show error", checkable=True, icon=icon("evaluate"))
        self.show_error.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.show_error.setToolTip("Colour cells by the measured relative quantization error at their current "
                                   "bits (runs the survey first if nothing is measured)\n\n" + ERROR_SCALE_TIP)
        self.show_error.toggled.connect(self.set_show_error)
        self.sensitivity_runner = SensitivityRunner(controller, self)
        self.show_sensitivity = QToolButton(text="Sensitivity", checkable=True)
        self.show_sensitivity.setToolTip("Colour cells by their output-space sensitivity at their current bits "
                                         "(runs the calibration pass first; cached)\n\n" + SENSITIVITY_SCALE_TIP)
        self.show_sensitivity.toggled.connect(self.set_show_sensitivity)
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
        self.survey_cancel.clicked.connect(self.sensitivity_runner.cancel)
        self.legend = QLabel(error_legend_html(), visible=False, textFormat=Qt.TextFormat.RichText)
        self.legend.setToolTip(ERROR_SCALE_TIP)
        # "errors from out/quant_errors.json": cut in the middle if ever too long, never widening the window.
        self.status = ElidedLabel(elide=Qt.TextElideMode.ElideMiddle)
        self.status.setEnabled(False)
        runner = self.survey_runner
        runner.started.connect(lambda: self._surveying(True))
        runner.progress.connect(self._survey_progress)
        runner.finished.connect(
            lambda s: self._surveying(False, f"surveyed {len(s.units):,} tensors ({s.seconds:.1f} s)"))
        runner.stopped.connect(lambda reason: self._surveying(False, reason))
        controller.errors_changed.connect(self._errors_changed)
        sens = self.sensitivity_runner
        sens.started.connect(lambda: self._surveying(True, status="calibrating…"))
        sens.progress.connect(self._calibration_progress)
        sens.finished.connect(self._sensitivity_measured)
        sens.stopped.connect(self._sensitivity_stopped)
        controller.project_changed.connect(self._project_changed)

        buttons = QHBoxLayout()
        buttons.setContentsMargins(0, 0, 0, 0)
        for widget in (self.show_error, self.show_sensitivity, survey, load, self.survey_bar, self.survey_cancel):
            buttons.addWidget(widget)
        buttons.addStretch(1)
        buttons.addWidget(fit)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(buttons)
        # The legend shares the status line (under the buttons, where it never widens the window).
        status_row = QHBoxLayout()
        status_row.setContentsMargins(0, 0, 0, 0)
        status_row.addWidget(self.status, 1)
        status_row.addWidget(self.legend)
        layout.addLayout(status_row)

    def _project_changed(self, _project) -> None:
        """Another model: its errors are not measured yet (the survey line and error source go)."""
        self.set_show_sensitivity(False)
        self.status.setText("")

    def set_show_error(self, on: bool) -> None:
        if self.show_error.isChecked() != on:
            self.show_error.setChecked(on)  # comes back here through toggled
            return
        if on:
            self.show_sensitivity.setChecked(False)  # one heat map at a time
            self.legend.setText(error_legend_html())
        self.legend.setVisible(on)
        self.show_error_changed.emit(on)
        if on and self.controller.errors is None:
            self.survey_runner.start()

    def set_show_sensitivity(self, on: bool) -> None:
        if self.show_sensitivity.isChecked() != on:
            self.show_sensitivity.setChecked(on)  # comes back here through toggled
            return
        if on:
            self.show_error.setChecked(False)
            if self.sensitivity_runner.stats is None:
                self.sensitivity_runner.start()
            else:
                self._sensitivity_measured(self.sensitivity_runner.stats)
            return
        self.legend.setVisible(self.show_error.isChecked())
        self.sensitivity_changed.emit(None)

    def _sensitivity_measured(self, stats) -> None:
        self._surveying(False, f"output-space sensitivity from {stats.tokens:,} tokens of {stats.corpus_label} "
                               f"({stats.seconds:.1f} s)")
        if self.show_sensitivity.isChecked():
            self.legend.setText(error_legend_html("relative output error"))
            self.legend.setVisible(True)
            self.sensitivity_changed.emit(stats.relative_output_error())

    def _sensitivity_stopped(self, reason: str) -> None:
        self._surveying(False, f"sensitivity: {reason}")
        self.set_show_sensitivity(False)

    def _surveying(self, on: bool, message: str = "", status: str = "surveying…") -> None:
        self.survey_bar.setVisible(on)
        self.survey_cancel.setVisible(on)
        self.survey_bar.setValue(0)
        self.status.setText(status if on else message)

    def _survey_progress(self, p) -> None:  # SurveyProgress
        self.survey_bar.setValue(int(1000 * p.fraction))
        self.survey_bar.setFormat(f"{p.done}/{p.total}")

    def _calibration_progress(self, p) -> None:  # CalibrationProgress
        self.survey_bar.setValue(int(1000 * p.fraction))
        self.survey_bar.setFormat(f"{p.step}/{p.total} {p.label}")

    def _errors_changed(self, errors) -> None:
        if errors is not None and errors.source != "survey":
            self.status.setText(f"errors from {errors.source}")

    def load_errors(self, path: str, *, quiet: bool = False) -> bool:
        """Show a quant_errors.json (or the folder holding one); `quiet` says a failure in the status line
        instead of a message box (loads the window does by itself, after a conversion or on open)."""
        try:
            data = load_quant_errors(path)
        except StudioError as exc:
            if quiet:
                self.status.setText(str(exc))
            else:
                QMessageBox.warning(self, "Load errors", str(exc))
            return False
        name = f"{Path(path).name}/quant_errors.json" if Path(path).is_dir() else Path(path).name
        self.controller.set_errors(ErrorMap.from_entries(data, name))
        return True

    def load_errors_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load quant_errors.json", settings.start_folder(settings.OUTPUT_DIR),
                                              "Quantization errors (quant_errors.json *.json)")
        if path:
            self.load_errors(path)
            self.set_show_error(True)

    def open_fit_dialog(self) -> BudgetDialog | None:
        if self.controller.project is None:
            return None
        if self.fit_dialog is not None:
            self.fit_dialog.close()
        self.fit_dialog = BudgetDialog(self.controller, self.survey_runner, self, self.sensitivity_runner.stats)
        self.fit_dialog.open()
        return self.fit_dialog

    def shutdown(self) -> None:
        self.survey_runner.shutdown()
        self.sensitivity_runner.shutdown()
