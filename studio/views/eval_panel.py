"""The Validate panel: run an evaluation off the UI thread and show its figures, verdict and plots.

All numbers come from ``studio.core.evaluate``; this module only runs it on a
QThread and draws the result.
"""

from __future__ import annotations

import os
import threading
import traceback

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QThread, Signal, Slot
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

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

    def cancel(self) -> None:
        self.cancel_event.set()

    def run(self) -> None:  # noqa: D401 - QThread entry point
        from studio.core.errors import StudioError
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

                record_evaluation(self.output_path, result)
            self.succeeded.emit(result)
        finally:
            from studio.core.mlx_thread import release_thread_streams

            release_thread_streams()


def _value_label(text: str = "–") -> QLabel:
    label = QLabel(text)
    label.setStyleSheet("font-weight: 600;")
    return label


class EvalPanel(QWidget):
    """Figures, verdict and per-window plots of one ``EvalResult``; runs evaluations on a worker thread."""

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
        self.verdict_label.setTextFormat(pg.QtCore.Qt.TextFormat.RichText)
        self.findings_label = QLabel()
        self.findings_label.setWordWrap(True)
        self.findings_label.setTextFormat(pg.QtCore.Qt.TextFormat.RichText)
        self.caveats_label = QLabel()
        self.caveats_label.setWordWrap(True)
        self.caveats_label.setStyleSheet("color: #666;")

        # Figures.
        grid = QGridLayout()
        self.values: dict[str, QLabel] = {}
        for row, (key, name) in enumerate(self.FIGURES):
            grid.addWidget(QLabel(name), row, 0)
            self.values[key] = _value_label()
            grid.addWidget(self.values[key], row, 1)
        grid.setColumnStretch(2, 1)
        figures = QFrame()
        figures.setLayout(grid)

        # Plots: KL per window, perplexity per window.
        pg.setConfigOptions(antialias=True, background="w", foreground="#333")
        self.plots = pg.GraphicsLayoutWidget()
        self.plots.setMinimumHeight(260)
        self.plots.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.kl_plot = self.plots.addPlot(row=0, col=0, title="KL divergence per window (mean, nats)")
        self.kl_plot.setLabel("bottom", "window")
        self.ppl_plot = self.plots.addPlot(row=1, col=0, title="Perplexity per window")
        self.ppl_plot.setLabel("bottom", "window")
        self.ppl_plot.addLegend(offset=(-10, 10))
        self.ppl_plot.setXLink(self.kl_plot)

        top = QHBoxLayout()
        top.addWidget(figures, 0)
        verdict_box = QVBoxLayout()
        verdict_box.addWidget(self.verdict_label)
        verdict_box.addWidget(self.findings_label)
        verdict_box.addWidget(self.caveats_label)
        verdict_box.addStretch(1)
        top.addLayout(verdict_box, 1)

        layout = QVBoxLayout(self)
        layout.addWidget(self.status)
        layout.addLayout(run_row)
        layout.addLayout(top)
        layout.addWidget(self.plots, 1)

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
        worker = EvalWorker(output_path, reference_path, text_path, options, parent=self)
        worker.progress.connect(self._on_progress)
        worker.succeeded.connect(self._on_succeeded)
        worker.failed.connect(self._on_failed)
        worker.cancelled.connect(self._on_cancelled)
        self._worker = worker
        self.status.setText(f"Evaluating {output_path} against {reference_path}…")
        self.progress_bar.setRange(0, 0)  # busy until the first window reports
        self.progress_bar.setVisible(True)
        self.cancel_button.setVisible(True)
        self.cancel_button.setEnabled(True)
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

    def _finish_run(self, message: str) -> None:
        self.progress_bar.setVisible(False)
        self.cancel_button.setVisible(False)
        self.status.setText(message)
        if self._worker is not None:
            self._worker.wait()
            self._worker.deleteLater()
            self._worker = None

    @Slot(str, int, int)
    def _on_progress(self, stage: str, done: int, total: int) -> None:
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(done)
        self.progress_bar.setFormat(f"{STAGE_NAMES.get(stage, stage)}: window %v of %m")

    @Slot(object)
    def _on_succeeded(self, result) -> None:
        self._finish_run(f"Evaluated in {result.seconds:.1f} s.")
        self.show_result(result)
        self.result_ready.emit(result)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self._finish_run(message)
        self.failed.emit(message)

    @Slot()
    def _on_cancelled(self) -> None:
        self._finish_run("Evaluation cancelled; nothing was cached.")

    # --- showing ---------------------------------------------------------------------------------

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
            "kld_mean": f"{r.kld_mean:.4f} nats{kl_note}",
            "kld_tail": f"{r.kld_median:.4f} / {r.kld_p99:.4f} / {r.kld_max:.4f}",
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
        self.kl_plot.addLine(y=result.kld_mean, pen=pg.mkPen("#333", style=pg.QtCore.Qt.PenStyle.DashLine))
        self.ppl_plot.plot(x, [w.ppl_reference for w in windows], pen=pg.mkPen("#1565c0", width=2),
                           symbol="o", symbolSize=5, symbolBrush="#1565c0", name="reference")
        self.ppl_plot.plot(x, [w.ppl for w in windows], pen=pg.mkPen("#c62828", width=2),
                           symbol="o", symbolSize=5, symbolBrush="#c62828", name="output")
        self.kl_plot.setXRange(-0.6, len(windows) - 0.4, padding=0)
