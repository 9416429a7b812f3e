"""The Evaluate panel: pick a converted model, its reference and a text; run the evaluation off
the UI thread and show its figures, verdict and plots.

All numbers come from the core: ``studio.core.evaluate`` for the evaluation,
``studio.core.quant_error.error_map.layer_profile`` for the per-layer error a conversion
measured (its ``quant_errors.json``), ``studio.core.model_card.record_evaluation``
for the model card. This module only runs them on a QThread and draws the result.
"""

from __future__ import annotations

import math
import os
import threading
import traceback
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QThread, Qt, Signal, Slot
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
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from studio.core.errors import StudioError
from studio.core.formatting import nats
from studio.core.quant_error.error_map import FILE_NAME as QUANT_ERRORS
from studio.core.quant_error.error_map import layer_profile
from studio.core.quant_error.error_map import load as load_quant_errors
from studio.core.roles import FAMILY_COLOURS, FAMILY_LABELS
from studio.views.icons import icon
from studio.views.size_panel import layer_ticks

# Colours per verdict level: near-lossless, good, noticeably damaged, badly damaged.
LEVEL_COLOURS = ("#2e7d32", "#558b2f", "#ef6c00", "#c62828")
STAGE_NAMES = {"reference": "Reference pass", "output": "Output pass", "together": "Both models"}


class EvalWorker(QThread):
    """Runs ``evaluate`` on its own thread; every result travels back by signal."""

    progress = Signal(str, int, int)
    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, output_path, reference_path, text_path=None, options: dict | None = None, parent=None):
        super().__init__(parent)
        self.output_path = output_path
        self.reference_path = reference_path
        self.text_path = text_path
        self.options = dict(options or {})
        self.cancel_event = threading.Event()
        self.recorded: bool | str = False  # True once the model card holds the result; a sentence if it failed

    def cancel(self) -> None:
        self.cancel_event.set()

    def run(self) -> None:  # noqa: D401 - QThread entry point
        from studio.core.evaluate import EvalCancelled, evaluate

        try:
            result = evaluate(self.output_path, self.reference_path, text_path=self.text_path,
                              progress=self.progress.emit, cancel=self.cancel_event, **self.options)
        except EvalCancelled:
            self.cancelled.emit()
        except StudioError as exc:
            self.failed.emit(str(exc))
        except Exception as exc:  # a bug: say so, keep the window alive
            traceback.print_exc()
            self.failed.emit(f"The evaluation failed unexpectedly ({type(exc).__name__}: {exc}).")
        else:
            if isinstance(self.output_path, (str, os.PathLike)):
                from studio.core.model_card import record_evaluation

                try:
                    self.recorded = record_evaluation(self.output_path, result)
                except OSError as exc:
                    self.recorded = f"the model card could not be updated ({exc.strerror or exc})."
            self.succeeded.emit(result)
        finally:
            from studio.core.mlx_thread import release_thread_streams

            release_thread_streams()


def _value_label(text: str = "–") -> QLabel:
    label = QLabel(text)
    label.setStyleSheet("font-weight: 600;")
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


PERCENT_STEPS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100)
ONE_TWO_FIVE = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)


def percent_ticks(low: float, high: float) -> tuple[float, float, list[tuple[float, str]]]:
    """A log axis of percentages covering `low`..`high`: its ends (round values just outside the
    data) and labelled ticks between them, 1-2-5 steps when the range is wide. Positions are
    log10, as pyqtgraph's log mode wants."""
    start = max([v for v in PERCENT_STEPS if v <= low], default=PERCENT_STEPS[0])
    stop = min([v for v in PERCENT_STEPS if v >= high], default=PERCENT_STEPS[-1])
    values = [v for v in PERCENT_STEPS if start <= v <= stop]
    if len(values) > 7:
        values = [v for v in values if v in ONE_TWO_FIVE or v in (start, stop)]
    return start, stop, [(math.log10(v), f"{v:g}") for v in values]


class EvalPanel(QWidget):
    """Inputs, figures, verdict and plots of one ``EvalResult``; runs evaluations on a worker thread."""

    result_ready = Signal(object)
    failed = Signal(str)

    FIGURES = (
        ("ppl", "Perplexity (output)"),
        ("ppl_reference", "Perplexity (reference)"),
        ("ppl_increase", "Perplexity increase"),
        ("kld_mean", "KL divergence, mean"),
        ("kld_tail", "KL median / p99 / max"),
        ("top1_agreement", "Top-1 agreement"),
        ("tokens", "Tokens scored"),
        ("how", "Computed"),
    )

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._worker: EvalWorker | None = None
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
        self.context = QSpinBox(minimum=16, maximum=32768, singleStep=128, value=512, suffix=" tokens")
        self.context.setToolTip("Window length: each window is scored on its own")
        self.max_tokens = QSpinBox(minimum=64, maximum=1_000_000, singleStep=1024, value=4096, suffix=" tokens")
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
        self.status = QLabel("No evaluation yet. Compare a converted model with its reference to see how much "
                             "it drifted.")
        self.status.setWordWrap(True)
        self.progress_bar = QProgressBar()
        self.progress_bar.setVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self.cancel)
        run_row = QHBoxLayout()
        run_row.addWidget(self.progress_bar, 1)
        run_row.addWidget(self.cancel_button)

        # Verdict.
        self.verdict_label = QLabel()
        self.verdict_label.setWordWrap(True)
        self.verdict_label.setTextFormat(Qt.TextFormat.RichText)
        self.findings_label = QLabel()
        self.findings_label.setWordWrap(True)
        self.findings_label.setTextFormat(Qt.TextFormat.RichText)
        self.caveats_label = QLabel()
        self.caveats_label.setWordWrap(True)
        self.caveats_label.setEnabled(False)  # the palette's quieter text, in light and dark themes
        self.card_label = QLabel()  # where the result was recorded (the output's model card)
        self.card_label.setWordWrap(True)
        self.card_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        # Figures: compact rows at the top of their column.
        grid = QGridLayout()
        self.values: dict[str, QLabel] = {}
        for row, (key, name) in enumerate(self.FIGURES):
            grid.addWidget(QLabel(name), row, 0)
            self.values[key] = _value_label()
            grid.addWidget(self.values[key], row, 1)
        grid.setColumnStretch(2, 1)
        grid.setRowStretch(len(self.FIGURES), 1)
        grid.setVerticalSpacing(4)
        figures = QFrame()
        figures.setLayout(grid)

        # Plots: KL and perplexity per window; beside them, the error the conversion measured per layer.
        self.plots = pg.GraphicsLayoutWidget()
        self.plots.setAntialiasing(True)
        self.plots.setMinimumHeight(240)
        self.plots.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.kl_plot = self.plots.addPlot(row=0, col=0, title="KL divergence per window (mean, nats)")
        self.kl_plot.setLabel("bottom", "window")
        self.ppl_plot = self.plots.addPlot(row=1, col=0, title="Perplexity per window")
        self.ppl_plot.setLabel("bottom", "window")
        self.ppl_plot.addLegend(offset=(-10, 10))
        self.ppl_plot.setXLink(self.kl_plot)
        self.layer_plot = self.plots.addPlot(row=0, col=1, rowspan=2,
                                             title="Relative error per layer (quant_errors.json)")
        self.layer_plot.setLabel("bottom", "layer")
        self.layer_plot.setLabel("left", "relative error", units="%")
        self.layer_plot.getAxis("left").enableAutoSIPrefix(False)
        self.layer_plot.setLogMode(x=False, y=True)
        self.layer_plot.showGrid(x=False, y=True, alpha=0.25)
        self.layer_legend = self.layer_plot.addLegend(offset=(-10, 10))
        self.layer_plot.setToolTip("Relative error ||dequantize(quantize(W)) - W|| / ||W|| the conversion measured, "
                                   "per layer and role family (element-weighted RMS; log scale).\n"
                                   "Typical: 8-bit about 0.5%, 4-bit 5-10%, 2-bit 30-50%.")
        self._layer_hint = pg.TextItem("No quant_errors.json in the output folder\n"
                                       "(convert with \"Measure error\" to get one).", anchor=(0.5, 0.5))
        self.plots.ci.layout.setColumnStretchFactor(0, 3)
        self.plots.ci.layout.setColumnStretchFactor(1, 2)

        # Figures and verdict scroll above the plots; the splitter shares the height between them.
        top = QHBoxLayout()
        top.addWidget(figures, 0)
        verdict_box = QVBoxLayout()
        verdict_box.addWidget(self.verdict_label)
        verdict_box.addWidget(self.findings_label)
        verdict_box.addWidget(self.caveats_label)
        verdict_box.addStretch(1)
        top.addLayout(verdict_box, 1)
        report = QWidget()
        report_layout = QVBoxLayout(report)
        report_layout.setContentsMargins(0, 0, 0, 0)
        report_layout.addLayout(top)
        report_layout.addWidget(self.card_label)
        self.report = QScrollArea(widgetResizable=True, frameShape=QFrame.Shape.NoFrame)
        self.report.setWidget(report)
        self.splitter = QSplitter(Qt.Orientation.Vertical, childrenCollapsible=False)
        self.splitter.addWidget(self.report)
        self.splitter.addWidget(self.plots)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([420, 480])

        layout = QVBoxLayout(self)
        layout.addLayout(inputs)
        layout.addWidget(self.status)
        layout.addLayout(run_row)
        layout.addWidget(self.splitter, 1)
        self.apply_palette(self.palette())
        self._show_profile()

    # --- inputs ---------------------------------------------------------------------------------

    def set_paths(self, output_path, reference_path=None, text_path=None) -> None:
        """Fill the fields (after a conversion: its output against its source) and show the output's
        per-layer error; the next click on Evaluate runs them."""
        self.output_edit.setText(str(output_path))
        if reference_path is not None:
            self.reference_edit.setText(str(reference_path))
        if text_path is not None:
            self.text_edit.setText(str(text_path))
        self._output_changed()
        if not self.running:
            self.status.setText(f"Ready to compare {Path(str(output_path)).name} with "
                                f"{Path(self.reference_edit.text()).name or 'a reference'}: press Evaluate.")

    def _choose_folder(self, edit: QLineEdit, title: str) -> None:
        start = edit.text() or self.output_edit.text() or self.reference_edit.text()
        path = QFileDialog.getExistingDirectory(self, title, str(Path(start).parent) if start else "")
        if path:
            edit.setText(path)
            if edit is self.output_edit:
                self._output_changed()

    def _choose_text(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Text to score", self.text_edit.text(),
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
                self._layer_hint.setText(str(exc))
        self._show_profile()

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

        ``options`` go to ``studio.core.evaluate.evaluate`` (context, max_tokens, mode, cache_dir).
        """
        if self.running:
            return False
        if isinstance(output_path, (str, os.PathLike)) and self.output_edit.text().strip() != str(output_path):
            self.output_edit.setText(str(output_path))
            self._output_changed()
        if isinstance(reference_path, (str, os.PathLike)):
            self.reference_edit.setText(str(reference_path))
        worker = EvalWorker(output_path, reference_path, text_path, options, parent=self)
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
            self._worker.cancel()
            self._worker.wait()

    def _finish_run(self, message: str) -> bool | str:
        self.progress_bar.setVisible(False)
        self.cancel_button.setVisible(False)
        self.evaluate_button.setEnabled(True)
        self.status.setText(message)
        recorded: bool | str = False
        if self._worker is not None:
            self._worker.wait()
            recorded = self._worker.recorded
            self._worker.deleteLater()
            self._worker = None
        return recorded

    @Slot(str, int, int)
    def _on_progress(self, stage: str, done: int, total: int) -> None:
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(done)
        self.progress_bar.setFormat(f"{STAGE_NAMES.get(stage, stage)}: window %v of %m")

    @Slot(object)
    def _on_succeeded(self, result) -> None:
        recorded = self._finish_run(f"Evaluated in {result.seconds:.1f} s.")
        self.show_result(result)
        self.show_recorded(result.output, recorded)
        self.result_ready.emit(result)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self._finish_run(message)
        self.failed.emit(message)

    @Slot()
    def _on_cancelled(self) -> None:
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
        """Show an ``EvalResult``: figures, verdict sentences and the per-window plots."""
        self.result = result
        v = result.verdict()
        r = result
        kl_note = "" if r.kld_exact else " (top-k lower bound)"
        texts = {
            "ppl": f"{r.ppl:.3f}",
            "ppl_reference": f"{r.ppl_reference:.3f}",
            "ppl_increase": f"{r.ppl_increase:+.2%}",
            "kld_mean": f"{nats(r.kld_mean)} nats{kl_note}",
            "kld_tail": f"{nats(r.kld_median)} / {nats(r.kld_p99)} / {nats(r.kld_max)}",
            "top1_agreement": f"{r.top1_agreement:.1%}",
            "tokens": f"{r.tokens:,} in {r.windows} windows of {r.context}",
            "how": "both models in memory" if r.mode == "together" else f"reference cache {r.cache}",
        }
        for key, text in texts.items():
            self.values[key].setText(text)

        colour = LEVEL_COLOURS[v.level]
        self.verdict_label.setText(
            f"<span style='font-size: 15pt; font-weight: 700; color: {colour};'>{v.label.capitalize()}</span>"
            f"<br>{v.summary}")
        items = "".join(
            f"<li><b>{f.name}</b>: {f.value} — <span style='color: {LEVEL_COLOURS[f.level]};'>{f.label}</span>"
            f"{'' if f.counted else ' (not counted)'}"
            f"<br>{f.meaning} <i>{f.rule}</i></li>" for f in v.findings)
        self.findings_label.setText(f"<ul style='margin-left: -20px;'>{items}</ul>")
        self.caveats_label.setText("\n".join(v.caveats))
        self._plot(result)
        self.status.setText(f"{r.output} against {r.reference}, on {r.text}.")

    def _plot(self, result) -> None:
        windows = result.per_window
        self.kl_plot.clear()
        self.ppl_plot.clear()
        if not windows:
            return
        x = np.arange(len(windows), dtype=float)
        kl = np.array([w.kld_mean for w in windows])
        bars = pg.BarGraphItem(x=x, height=kl, width=0.7, brush=LEVEL_COLOURS[result.verdict().level])
        self.kl_plot.addItem(bars)
        self.kl_plot.addLine(y=result.kld_mean, pen=pg.mkPen(self._foreground, style=Qt.PenStyle.DashLine))
        self.ppl_plot.plot(x, [w.ppl_reference for w in windows], pen=pg.mkPen("#0072B2", width=2),
                           symbol="o", symbolSize=5, symbolBrush="#0072B2", name="reference")
        self.ppl_plot.plot(x, [w.ppl for w in windows], pen=pg.mkPen("#D55E00", width=2),
                           symbol="o", symbolSize=5, symbolBrush="#D55E00", name="output")
        self.kl_plot.setXRange(-0.6, len(windows) - 0.4, padding=0)

    def _show_profile(self) -> None:
        """The per-layer plot: one line per role family, in the family's role colour."""
        plot = self.layer_plot
        plot.clear()
        self.layer_legend.clear()
        if not self.profile:
            plot.getAxis("bottom").setTicks(None)
            plot.getAxis("left").setTicks(None)
            plot.addItem(self._layer_hint, ignoreBounds=True)
            self._layer_hint.setPos(0.5, 0.5)
            self._layer_hint.setColor(self._foreground)
            plot.setXRange(0, 1, padding=0)
            plot.setYRange(0, 1, padding=0)
            plot.getAxis("left").setStyle(showValues=False)
            return
        plot.getAxis("left").setStyle(showValues=True)
        layers = sorted({layer for by_layer in self.profile.values() for layer in by_layer})
        plot.getAxis("bottom").setTicks([layer_ticks(layers), []])
        percents = [100 * e for by_layer in self.profile.values() for e in by_layer.values() if e > 0]
        if percents:
            start, stop, ticks = percent_ticks(min(percents), max(percents))
            plot.getAxis("left").setTicks([ticks, []])
            plot.setYRange(math.log10(start), math.log10(stop), padding=0.04)
        for family, by_layer in self.profile.items():
            colour = FAMILY_COLOURS.get(family, "#BBBBBB")
            layers = list(by_layer)
            percent = [100 * by_layer[layer] for layer in layers]
            plot.plot(layers, percent, pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=6,
                      symbolBrush=colour, symbolPen=None, name=FAMILY_LABELS.get(family, family))
        plot.enableAutoRange(axis="x")

    def apply_palette(self, palette: QPalette) -> None:
        """Plot colours from the palette (dark themes included)."""
        self._foreground = palette.color(QPalette.ColorRole.Text)
        self.plots.setBackground(palette.color(QPalette.ColorRole.Base))
        for plot in (self.kl_plot, self.ppl_plot, self.layer_plot):
            plot.setTitle(plot.titleLabel.text, color=self._foreground)
            for name in ("left", "bottom"):
                plot.getAxis(name).setPen(self._foreground)
                plot.getAxis(name).setTextPen(self._foreground)
        for legend in (self.layer_legend, self.ppl_plot.legend):
            if legend is not None:
                legend.setLabelTextColor(self._foreground)
        self._layer_hint.setColor(self._foreground)

    def changeEvent(self, event):
        if event.type() == QEvent.Type.PaletteChange:
            self.apply_palette(self.palette())
        super().changeEvent(event)
