"""The Evaluate panel: pick a converted model, its reference and a text; run the evaluation off
the UI thread and show its figures, verdict and plots.

All numbers come from the core: ``studio.core.card.eval_record.evaluate_and_record``
evaluates and records the result in the output's model card (the same function
``configi-studio eval`` calls), ``studio.core.evaluate.report`` words the figures,
``studio.core.quant_error.error_map.layer_profile`` gives the per-layer error of the
conversion. The run goes through ``studio.worker.Worker``; the plots are
``eval_plots.EvalPlots``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from PySide6.QtCore import QEvent, Qt, Signal, Slot
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from studio import settings
from studio.core.errors import StudioError
from studio.core.evaluate.defaults import DEFAULT_CONTEXT, DEFAULT_MAX_TOKENS
from studio.core.card.eval_record import evaluate_and_record
from studio.core.evaluate.report import FIGURE_NAMES, figure_rows
from studio.core.evaluate.result import EvalCancelled
from studio.core.quant_error.error_map import FILE_NAME as QUANT_ERRORS
from studio.core.quant_error.error_map import layer_profile
from studio.core.quant_error.error_map import load as load_quant_errors
from studio.views.eval_plots import EvalPlots
from studio.views.icons import icon
from studio.worker import Worker

# Colours per verdict level: near-lossless, good, noticeably damaged, badly damaged.
LEVEL_COLOURS = ("#2e7d32", "#558b2f", "#ef6c00", "#c62828")
STAGE_NAMES = {"reference": "Reference pass", "output": "Output pass", "together": "Both models"}
IDLE_STATUS = "No evaluation yet. Compare a converted model with its reference to see how much it drifted."


def _value_label() -> QLabel:
    label = QLabel("–", wordWrap=True)  # wraps rather than squeezing the verdict beside it
    label.setStyleSheet("font-weight: 600;")
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


class EvalPanel(QWidget):
    """Inputs, figures, verdict and plots of one ``EvalResult``; runs evaluations on a worker thread."""

    result_ready = Signal(object)
    failed = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._worker: Worker | None = None
        self.result = None
        self.profile: dict[str, dict[int, float]] = {}  # relative error by role family and layer

        # What to compare: output, reference, text; how much.
        self.output_edit = QLineEdit(placeholderText="Converted model folder (MLX)")
        self.output_edit.setToolTip("The model to judge: a folder the studio (or mlx-lm) converted")
        self.output_edit.editingFinished.connect(self._output_changed)
        self.reference_edit = QLineEdit(placeholderText="Reference model folder (the source, or a bigger quant)")
        self.reference_edit.setToolTip("The model it is compared with; its tokenizer reads the text")
        self.text_edit = QLineEdit(placeholderText="the bundled sample text")
        self.text_edit.setToolTip("A UTF-8 text file to score both models on (empty: the bundled sample)")
        inputs = QGridLayout()
        for row, (name, edit, pick) in enumerate((
                ("Output:", self.output_edit, lambda: self._choose_folder(self.output_edit, "Converted model")),
                ("Reference:", self.reference_edit,
                 lambda: self._choose_folder(self.reference_edit, "Reference model")),
                ("Text:", self.text_edit, self._choose_text))):
            inputs.addWidget(QLabel(name), row, 0)
            inputs.addWidget(edit, row, 1)
            button = QPushButton(icon("folder"), "Choose…", toolTip=f"Choose the {name.rstrip(':').lower()}")
            button.clicked.connect(pick)
            inputs.addWidget(button, row, 2)
        self.context = QSpinBox(minimum=16, maximum=32768, singleStep=128, value=DEFAULT_CONTEXT, suffix=" tokens")
        self.context.setToolTip("Window length: each window is scored on its own")
        self.max_tokens = QSpinBox(minimum=64, maximum=1_000_000, singleStep=1024, value=DEFAULT_MAX_TOKENS,
                                   suffix=" tokens")
        self.max_tokens.setToolTip("At most this many tokens of the text are scored (more: firmer figures, slower)")
        self.evaluate_button = QPushButton(icon("evaluate"), "Evaluate")
        self.evaluate_button.setToolTip("Score both models on the text: perplexity, KL divergence, top-1 agreement")
        self.evaluate_button.clicked.connect(self.start_from_fields)
        run_options = QHBoxLayout()
        run_options.addWidget(QLabel("Context:"))
        run_options.addWidget(self.context)
        run_options.addSpacing(10)
        run_options.addWidget(QLabel("Score up to:"))
        run_options.addWidget(self.max_tokens)
        run_options.addStretch(1)
        run_options.addWidget(self.evaluate_button)
        inputs.addLayout(run_options, 3, 0, 1, 3)
        inputs.setColumnStretch(1, 1)

        # Run status: progress and cancel.
        self.status = QLabel(IDLE_STATUS)
        self.status.setWordWrap(True)
        self.progress_bar = QProgressBar()
        self.progress_bar.setVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self.cancel)
        run_row = QHBoxLayout()
        run_row.addWidget(self.progress_bar, 1)
        run_row.addWidget(self.cancel_button)

        # Verdict, its findings and caveats, and where the result was recorded.
        self.verdict_label = QLabel(wordWrap=True, textFormat=Qt.TextFormat.RichText)
        self.findings_label = QLabel(wordWrap=True, textFormat=Qt.TextFormat.RichText)
        self.caveats_label = QLabel(wordWrap=True)
        self.caveats_label.setEnabled(False)  # the palette's quieter text, in light and dark themes
        self.card_label = QLabel(wordWrap=True)
        self.card_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        # Figures: one row each, in the words of the model card.
        grid = QGridLayout()
        self.values: dict[str, QLabel] = {}
        self.names: dict[str, QLabel] = {}
        for row, (key, name) in enumerate(FIGURE_NAMES):
            self.names[key] = QLabel(name[0].upper() + name[1:])
            grid.addWidget(self.names[key], row, 0)
            self.values[key] = _value_label()
            grid.addWidget(self.values[key], row, 1)
        grid.setColumnStretch(1, 1)
        grid.setVerticalSpacing(2)
        grid.setContentsMargins(0, 4, 0, 4)
        figures = QFrame()
        figures.setLayout(grid)

        self.plots = EvalPlots()

        # The verdict, then the figures across the whole width (beside the verdict their values
        # wrapped onto three lines at 1280 wide), then what each figure means; all of it scrolls
        # above the plots, and the splitter shares the height between them.
        report = QWidget()
        report_layout = QVBoxLayout(report)
        report_layout.setContentsMargins(0, 0, 0, 0)
        report_layout.addWidget(self.verdict_label)
        report_layout.addWidget(figures)
        for label in (self.findings_label, self.caveats_label, self.card_label):
            report_layout.addWidget(label)
        report_layout.addStretch(1)
        self.report = QScrollArea(widgetResizable=True, frameShape=QFrame.Shape.NoFrame)
        self.report.setWidget(report)
        self.report.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.report.setMinimumHeight(120)
        self.splitter = QSplitter(Qt.Orientation.Vertical, childrenCollapsible=False)
        self.splitter.addWidget(self.report)
        self.splitter.addWidget(self.plots)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([380, 520])

        layout = QVBoxLayout(self)
        layout.addLayout(inputs)
        layout.addWidget(self.status)
        layout.addLayout(run_row)
        # Below the inputs everything scrolls when the window is too short for the report and the
        # plots at their least (1024x700): scrolled to, never squeezed until the axes lose their ticks.
        self.results = QScrollArea(widgetResizable=True, frameShape=QFrame.Shape.NoFrame, widget=self.splitter)
        self.results.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        layout.addWidget(self.results, 1)
        self.plots.apply_palette(self.palette())

    # --- inputs ---------------------------------------------------------------------------------

    def set_paths(self, output_path, reference_path=None, text_path=None) -> None:
        """Fill the fields (after a conversion: its output against its source) and show the output's
        per-layer error; the next click on Evaluate runs them. A result shown for another model goes."""
        if self.result is not None and str(output_path) != str(self.result.output):
            self.reset()
        self.output_edit.setText(str(output_path))
        if reference_path is not None:
            self.reference_edit.setText(str(reference_path))
        if text_path is not None:
            self.text_edit.setText(str(text_path))
        self._output_changed()
        if not self.running:
            self.status.setText(f"Ready to compare {Path(str(output_path)).name} with "
                                f"{Path(self.reference_edit.text()).name or 'a reference'}: press Evaluate.")

    def reset(self) -> None:
        """Forget the shown result (another model was opened): figures, verdict, plots, the card line."""
        if self.running:
            return
        self.result = None
        for label in self.values.values():
            label.setText("–")
        for label in (self.verdict_label, self.findings_label, self.caveats_label, self.card_label):
            label.clear()
        self.plots.clear_result()
        self.output_edit.clear()
        self.reference_edit.clear()
        self.profile = {}
        self.plots.show_profile({})
        self.status.setText(IDLE_STATUS)

    def model_changed(self, project) -> None:
        """Another model is open in the window: nothing shown here is about it."""
        self.reset()

    def _choose_folder(self, edit: QLineEdit, title: str) -> None:
        start = edit.text() or self.output_edit.text() or self.reference_edit.text()
        path = QFileDialog.getExistingDirectory(self, title, str(Path(start).parent) if start else
                                                settings.start_folder(settings.OUTPUT_DIR))
        if path:
            edit.setText(path)
            if edit is self.output_edit:
                self._output_changed()

    def _choose_text(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Text to score", self.text_edit.text() or str(Path.home()),
                                              "Text files (*.txt *.md);;All files (*)")
        if path:
            self.text_edit.setText(path)

    def _output_changed(self) -> None:
        """Load the output folder's quant_errors.json, if it has one, into the per-layer plot."""
        folder = Path(self.output_edit.text().strip())
        self.profile = {}
        if self.output_edit.text().strip() and (folder / QUANT_ERRORS).is_file():
            try:
                self.profile = layer_profile(load_quant_errors(folder))
            except StudioError as exc:
                self.plots.layer_hint.setText(str(exc))
        self.plots.show_profile(self.profile)

    def start_from_fields(self) -> bool:
        """Evaluate what the fields say (the Evaluate button)."""
        output, reference = self.output_edit.text().strip(), self.reference_edit.text().strip()
        if not output or not reference:
            self.status.setText("Choose the converted model (Output) and the model to compare it with (Reference).")
            return False
        return self.start(output, reference, self.text_edit.text().strip() or None,
                          context=self.context.value(), max_tokens=self.max_tokens.value())

    # --- running --------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._worker is not None and self._worker.isRunning()

    def start(self, output_path, reference_path, text_path=None, **options) -> bool:
        """Start an evaluation on a worker thread; False (and nothing started) if one is running.

        ``options`` go to ``studio.core.evaluate.run.evaluate`` (context, max_tokens, mode, compute, cache_dir).
        """
        if self.running:
            return False
        if isinstance(output_path, (str, os.PathLike)) and self.output_edit.text().strip() != str(output_path):
            self.output_edit.setText(str(output_path))
            self._output_changed()
        if isinstance(reference_path, (str, os.PathLike)):
            self.reference_edit.setText(str(reference_path))
        job = functools.partial(evaluate_and_record, output_path, reference_path, text_path=text_path, **options)
        worker = Worker(job, cancelled_errors=(EvalCancelled,), parent=self)
        worker.progress.connect(self._on_progress)
        worker.succeeded.connect(self._on_succeeded)
        worker.failed.connect(self._on_failed)
        worker.cancelled.connect(self._on_cancelled)
        self._worker = worker
        self.status.setText(f"Evaluating {output_path} against {reference_path}…")
        self.card_label.clear()
        self.progress_bar.setRange(0, 0)  # busy until the first window reports
        self.progress_bar.setVisible(True)
        self.cancel_button.setVisible(True)
        self.cancel_button.setEnabled(True)
        self.evaluate_button.setEnabled(False)
        worker.start()
        return True

    @Slot()
    def cancel(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self.cancel_button.setEnabled(False)
            self.status.setText("Cancelling after the current window…")

    def shutdown(self) -> None:
        """Cancel a running evaluation and wait for its thread (call before the window closes)."""
        if self._worker is not None:
            self._worker.stop()

    def _finish_run(self, message: str) -> None:
        self.progress_bar.setVisible(False)
        self.cancel_button.setVisible(False)
        self.evaluate_button.setEnabled(True)
        self.status.setText(message)
        if self._worker is not None:
            self._worker.wait()
            self._worker.deleteLater()
            self._worker = None

    @Slot(object)
    def _on_progress(self, p) -> None:
        self.progress_bar.setRange(0, p.total)
        self.progress_bar.setValue(p.done)
        self.progress_bar.setFormat(f"{STAGE_NAMES.get(p.stage, p.stage)}: window %v of %m")

    @Slot(object)
    def _on_succeeded(self, done) -> None:
        self._finish_run(f"Evaluated in {done.result.seconds:.1f} s.")
        self.show_result(done.result)
        self.show_recorded(done.result.output, done.recorded)
        self.result_ready.emit(done.result)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self._finish_run(message)
        self.failed.emit(message)

    @Slot(str)
    def _on_cancelled(self, _message: str) -> None:
        self._finish_run("Evaluation cancelled; nothing was cached.")

    # --- showing ---------------------------------------------------------------------------------

    def show_recorded(self, output: str, recorded: bool | str) -> None:
        """One line on what the core did with the result in the output folder."""
        if recorded is True:
            self.card_label.setText(f"✓ Recorded in the model card: the Quality section of "
                                    f"{Path(output) / 'README.md'} and {Path(output) / 'evaluation.json'}.")
        elif recorded:
            self.card_label.setText(f"Not recorded: {recorded}")
        else:
            self.card_label.setText("Not recorded in a model card: the output was not converted by the studio "
                                    "(it has no configi_policy.json).")

    def show_result(self, result) -> None:
        """Show an ``EvalResult``: figures, verdict sentences and the plots."""
        self.result = result
        v = result.verdict()
        for key, _, text in figure_rows(result):
            self.values[key].setText(text)
        if not result.kld_exact:
            self.values["kld_mean"].setText(self.values["kld_mean"].text() + " (top-k lower bound)")
        colour = LEVEL_COLOURS[v.level]
        self.verdict_label.setText(
            f"<span style='font-size: 15pt; font-weight: 700; color: {colour};'>{v.label.capitalize()}</span>"
            f"<br>{v.summary}")
        items = "".join(
            f"<li><b>{f.name}</b>: {f.value} — <span style='color: {LEVEL_COLOURS[f.level]};'>{f.label}</span>"
            f"{'' if f.counted else ' (not counted)'}{' — <b>drove the verdict</b>' if f.name in v.drivers else ''}"
            f"<br>{f.meaning} <i>{f.rule}</i></li>" for f in v.findings)
        self.findings_label.setText(f"<ul style='margin-left: -20px;'>{items}</ul>")
        self.caveats_label.setText("\n".join(v.caveats))
        self.plots.show_result(result, colour)
        self.status.setText(f"{result.output} against {result.reference}, on {result.text} "
                            f"({result.compute_sentence()}).")

    def changeEvent(self, event):
        if event.type() == QEvent.Type.PaletteChange:
            self.plots.apply_palette(self.palette())
        super().changeEvent(event)

