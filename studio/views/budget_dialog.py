""""Fit to budget…": choose a size or a Mac, survey the errors (on the worker), review the diff, Apply or Cancel.

Apply replaces the policy with the proposal as one undo step; Cancel changes nothing.
Once the grid's "Sensitivity" has measured the model, "Propose by output-space
sensitivity" spends the bytes by it instead, with no survey. A target below the
smallest size the policy can reach is refused before anything is measured; a
survey of another model or policy (one joined while it ran) is measured again.
"""

from __future__ import annotations

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt
from PySide6.QtWidgets import (QButtonGroup, QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QGridLayout,
                               QHBoxLayout, QHeaderView, QLabel, QProgressBar, QPushButton, QRadioButton, QTableView,
                               QVBoxLayout)

from studio import settings
from studio.core.budget.report import error_text
from studio.core.errors import StudioError
from studio.core.formatting import human_bytes
from studio.core.memory import CONTEXT_CHOICES, MAC_MEMORY_GB

HEADERS = ("Role", "Layers", "Bits", "Size before", "Size after", "Error before", "Error after")


class ChangesModel(QAbstractTableModel):
    """The proposal's grouped changes (budget.report.ChangeRow), read-only."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows = []
        self.additive = False

    def set_rows(self, rows, additive: bool = False) -> None:
        self.beginResetModel()
        self.rows = list(rows)
        self.additive = additive  # summed sensitivities, not relative errors
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(HEADERS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return HEADERS[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        r = self.rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return (r.role_label, r.layers_text, f"{r.old_bits} → {r.new_bits}", human_bytes(r.bytes_before),
                    human_bytes(r.bytes_after), error_text(r.error_before, self.additive),
                    error_text(r.error_after, self.additive))[index.column()]
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() >= 2:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class BudgetDialog(QDialog):
    def __init__(self, controller, runner, parent=None, calibration=None):
        super().__init__(parent)
        self.setWindowTitle("Fit to budget")
        self.controller, self.runner = controller, runner
        self.calibration = calibration  # CalibrationStats of this model, if its sensitivity was measured
        self.result = None
        self._resurveyed = False  # a mismatched survey is measured again once, then refused

        self.by_size = QRadioButton("Output size at most")
        self.by_mac = QRadioButton("Fit a Mac")
        choice = QButtonGroup(self)
        choice.addButton(self.by_size)
        choice.addButton(self.by_mac)
        total = controller.project.estimate.total_bytes if controller.project else 0
        # Small models (the demo, tests) are sized in MB; real ones in GB.
        self.unit_bytes, unit_name = (1e9, " GB") if total >= 10e9 else (1e6, " MB")
        self.size = QDoubleSpinBox(decimals=2, minimum=0.01, maximum=1e6, suffix=unit_name)
        self.size.setValue(max(0.01, round(total * 0.9 / self.unit_bytes, 2)))
        self.mac = QComboBox()
        for gb in MAC_MEMORY_GB:
            self.mac.addItem(f"{gb} GB", gb)
        self.mac.setCurrentIndex(max(0, self.mac.findData(settings.get(settings.MAC_GB))))
        self.context = QComboBox()
        for tokens in CONTEXT_CHOICES:
            self.context.addItem(f"{tokens // 1024}K context", tokens)
        self.context.setCurrentIndex(max(0, self.context.findData(settings.get(settings.CONTEXT))))
        self.by_mac.setChecked(True)
        self.by_mac.setToolTip("The Mac's GPU memory limit less the KV cache at this context and the runtime")

        self.use_sensitivity = QCheckBox("Propose by output-space sensitivity (calibration pass)",
                                         checked=calibration is not None, enabled=calibration is not None)
        self.use_sensitivity.setToolTip(
            "Spend the bytes where the predicted KL of the next-token distribution grows least, instead of by "
            "weight error"
            if calibration is not None else "Measure it first with \"Sensitivity\" on the grid")
        self.propose_button = QPushButton("Propose", toolTip="Survey the errors if needed and propose bits")
        self.propose_button.clicked.connect(self.propose)
        self.bar = QProgressBar(visible=False)
        self.bar.setRange(0, 1000)
        self.bar.setMinimumWidth(240)
        # "Stop", not a second "Cancel": the dialog's Cancel closes it.
        self.cancel_button = QPushButton("Stop survey", visible=False, toolTip="Stop measuring; nothing changes")
        self.cancel_button.clicked.connect(runner.cancel)
        self.summary = QLabel("Choose a target and press Propose.", wordWrap=True)
        self.changes = ChangesModel(self)
        self.table = QTableView()
        self.table.setModel(self.changes)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)
        self.table.setAlternatingRowColors(True)
        # The table fills the dialog: the names share the spare width, the figures keep theirs.
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        for column in (0, 1):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Stretch)
        self.buttons = QDialogButtonBox()
        # Verbs that say what happens (testers read "Reject" as rejecting the model).
        self.accept_button = self.buttons.addButton("Apply", QDialogButtonBox.ButtonRole.AcceptRole)
        self.accept_button.setToolTip("Replace the policy with the proposal (one undo step)")
        self.cancel_dialog_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.cancel_dialog_button.setToolTip("Close without changing the policy")
        self.accept_button.setEnabled(False)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        grid = QGridLayout()
        grid.addWidget(self.by_size, 0, 0)
        grid.addWidget(self.size, 0, 1)
        grid.addWidget(self.by_mac, 1, 0)
        grid.addWidget(self.mac, 1, 1)
        grid.addWidget(self.context, 1, 2)
        grid.addWidget(self.propose_button, 0, 3, 2, 1)
        grid.addWidget(self.use_sensitivity, 2, 0, 1, 3)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(2, 1)
        running = QHBoxLayout()  # the bar and its Stop button on one line, the bar's words inside it
        running.addWidget(self.bar, 1)
        running.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setSpacing(8)
        layout.addLayout(grid)
        layout.addLayout(running)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.buttons)
        self.resize(880, 520)

        runner.progress.connect(self._progress)
        runner.stopped.connect(self._stopped)
        self._connected = True

    def target(self) -> dict:
        if self.by_size.isChecked():
            return {"target_gb": self.size.value() * self.unit_bytes / 1e9}
        return {"mac_gb": self.mac.currentData(), "context": self.context.currentData()}

    def propose(self) -> None:
        """Check the target is reachable (sizes alone); use the latest survey if it is of this model
        and covers the policy; else run one, then propose."""
        from studio.core.budget.propose import check_feasible
        from studio.core.budget.report import target_bytes

        self.controller.flush()
        self.accept_button.setEnabled(False)
        survey, project = self.controller.survey, self.controller.project
        try:
            check_feasible(project, target_bytes(project, **self.target()))
        except StudioError as exc:
            self._no_proposal(str(exc))
            return
        if self.use_sensitivity.isChecked():
            self._compute(None)
            return
        if survey is not None and survey.mismatch(project) is None:
            self._compute(survey)
            return
        self._survey()

    def _survey(self) -> None:
        self._resurveyed = False
        self.summary.setText("Measuring the quantization error of every quantized tensor (samples)…")
        self._busy(True)
        self.runner.start(then=self._compute)

    def _no_proposal(self, sentence: str) -> None:
        self.result = None
        self.changes.set_rows([])
        self.summary.setText(sentence)

    def _busy(self, on: bool) -> None:
        self.bar.setVisible(on)
        self.cancel_button.setVisible(on)
        self.propose_button.setEnabled(not on)

    def _progress(self, p) -> None:
        self.bar.setValue(int(1000 * p.fraction))
        self.bar.setFormat(f"Surveying: {p.done} of {p.total} units (%p%)")

    def _stopped(self, reason: str) -> None:
        self._busy(False)
        self.summary.setText(f"No proposal: {reason}")

    def _compute(self, survey) -> None:
        from studio.core.budget.report import fit_to_budget, target_bytes

        self._busy(False)
        project = self.controller.project
        self.controller.flush()
        if survey is not None and survey.mismatch(project) is not None and not self._resurveyed:
            # A joined survey that was started for another model or policy: measure this one, once.
            self._resurveyed = True
            self._busy(True)
            self.runner.start(then=self._compute)
            return
        try:
            budget = target_bytes(project, **self.target())
            if self.use_sensitivity.isChecked():
                self.result = fit_to_budget(project, budget, self.calibration.sensitivity, additive=True,
                                            note="fit to budget (output-space sensitivity)")
            else:
                self.result = fit_to_budget(project, budget, survey)  # refuses a survey of another model
        except StudioError as exc:
            self._no_proposal(str(exc))
            return
        r = self.result
        self.changes.set_rows(r.rows, r.additive)
        measure = ("output-space sensitivity: predicted KL of the next-token distribution, summed over the cells"
                   if r.additive else "relative error, RMS over the quantized weights, measured on samples")
        self.summary.setText(
            f"{len(r.proposal.changes)} cell(s) change. Size {human_bytes(r.bytes_before)} → "
            f"{human_bytes(r.proposal.total_bytes)} for a budget of {human_bytes(r.proposal.target_bytes)}; "
            f"error {error_text(r.error_before, r.additive)} → {error_text(r.error_after, r.additive)} "
            f"({measure}).")
        self.accept_button.setEnabled(bool(r.proposal.changes))

    def accept(self) -> None:
        if self.result is not None and self.result.proposal.changes:
            self.controller.replace_policy(self.result.proposal.policy, "fit to budget",
                                           source=self.result.proposal.policy.name)
        super().accept()

    def done(self, code: int) -> None:
        if self._connected:  # the runner outlives the dialog: stop listening to it once
            self._connected = False
            self.runner.progress.disconnect(self._progress)
            self.runner.stopped.disconnect(self._stopped)
        super().done(code)
