"""The convert panel: output folder, Convert/Cancel, progress, and "Chat with it"."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QHBoxLayout, QLabel, QLineEdit, QMessageBox,
                               QProgressBar, QPushButton, QScrollArea, QVBoxLayout, QWidget)

from studio import settings
from studio.core.bundled import suggested_output
from studio.core.formatting import human_bytes
from studio.views.policy_bar import policy_stem
from studio.views import convert_confirm
from studio.views.convert_confirm import duration as _duration
from studio.views.icons import icon
from studio.views.publish_dialog import PublishDialog
from studio.views.widgets import ElidedLabel
from studio.worker import Worker


def _breakable(text: str) -> str:
    """Let a long path wrap after its slashes (a zero-width space), so a message is never cut."""
    return text.replace("/", "/\u200b")


class ConvertPanel(QWidget):
    chat_requested = Signal(str)
    evaluate_requested = Signal(str)      # the output folder: show the Evaluate tab (prefilled by the window)
    conversion_finished = Signal(object)  # ConvertResult
    conversion_stopped = Signal(str)      # the reason (cancelled or the error's sentence)

    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.worker: Worker | None = None
        self.result = None
        self.quiet = False  # tests: no message boxes
        self.publish_dialog: PublishDialog | None = None

        self.output = QLineEdit(placeholderText="Output folder for the MLX model")
        self._suggested = ""  # the folder last suggested: replaced as the policy changes, unlike one the user typed
        self.output.setToolTip("Where the converted MLX model is written (a new folder)")
        browse = QPushButton(icon("folder"), "Choose…", toolTip="Choose the output folder")
        browse.clicked.connect(self.choose_output)
        self.force = QCheckBox("Overwrite", toolTip="Replace the output folder if it already holds a model")
        self.measure = QCheckBox("Measure error", toolTip="Also write quant_errors.json: each tensor's relative "
                                 "quantization error (costs extra time, most on CPU)")
        self.measure.setChecked(settings.get(settings.MEASURE_ERRORS))
        self.measure.toggled.connect(lambda on: settings.put(settings.MEASURE_ERRORS, on))
        self.calibrate = QCheckBox("Calibrate", toolTip="Run the bundled calibration text through the source one "
                                   "layer at a time first, and choose the quantized values for the output (same "
                                   "size and tensors; better at 2-4 bits; cached for the next conversion)")
        self.calibrate.setChecked(settings.get(settings.CALIBRATE))
        self.calibrate.toggled.connect(lambda on: settings.put(settings.CALIBRATE, on))
        # Beside Calibrate: how the calibrated values are chosen (studio.core.calibration.convert_hook.METHODS).
        self.calibrate_method = QComboBox(toolTip="GPTQ: each matrix from its input statistics (fast).\n"
                                          "Learned: block-wise, each decoder layer's rounding, scales and biases "
                                          "tuned with autograd against the float layer (slower; AutoRound-style)")
        self.calibrate_method.addItem("GPTQ", "gptq")
        self.calibrate_method.addItem("Learned", "learned")
        self.calibrate_method.setCurrentIndex(max(self.calibrate_method.findData(
            settings.get(settings.CALIBRATE_METHOD)), 0))
        self.calibrate_method.currentIndexChanged.connect(
            lambda _: settings.put(settings.CALIBRATE_METHOD, self.calibrate_method.currentData()))
        self.calibrate_method.setEnabled(self.calibrate.isChecked())
        self.calibrate.toggled.connect(self.calibrate_method.setEnabled)
        self.convert_button = QPushButton(icon("convert"), "Convert", toolTip="Convert with this policy (Ctrl+Enter)")
        self.convert_button.clicked.connect(self.start)
        self.cancel_button = QPushButton(icon("cancel"), "Cancel", toolTip="Stop after the current tensor")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        self.chat_button = QPushButton("Chat with it", toolTip="Open the converted model in the chat")
        self.chat_button.clicked.connect(lambda: self.result and self.chat_requested.emit(str(self.result.path)))
        self.chat_button.setVisible(False)
        self.evaluate_button = QPushButton("Evaluate it",
                                           toolTip="Compare the converted model with this source (Evaluate tab)")
        self.evaluate_button.clicked.connect(
            lambda: self.result and self.evaluate_requested.emit(str(self.result.path)))
        self.evaluate_button.setVisible(False)
        self.publish_button = QPushButton("Publish…",
                                          toolTip="Upload the converted model to the Hugging Face Hub")
        self.publish_button.clicked.connect(self.open_publish)
        self.publish_button.setVisible(False)
        self.bar = QProgressBar(textVisible=True)
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        # Three lines (what, how far, how fast); a long tensor path is cut in the middle, never widening the dock.
        self.status = ElidedLabel("Choose an output folder and press Convert.", lines=3,
                                  elide=(Qt.TextElideMode.ElideMiddle, Qt.TextElideMode.ElideRight,
                                         Qt.TextElideMode.ElideRight))
        # What happened (done, failed, cancelled, why not started): wrapped, never cut.
        self.message = QLabel(wordWrap=True, visible=False, textInteractionFlags=Qt.TextInteractionFlag.TextSelectableByMouse)
        self.question: QMessageBox | None = None  # the open "Convert …? It takes about …" box

        row = QHBoxLayout()
        row.addWidget(QLabel("Output:"))
        row.addWidget(self.output, 1)
        row.addWidget(browse)
        # Two lines: on one, with the method beside Calibrate, the panel was wider than the dock's
        # 300 px at 1280x800 and its right edge (the outcome's text, the bar) was cut off.
        options = QVBoxLayout(spacing=2)
        for pair in ((self.force, self.measure), (self.calibrate, self.calibrate_method)):
            line = QHBoxLayout()
            for widget in pair:
                line.addWidget(widget)
            line.addStretch(1)
            options.addLayout(line)
        buttons = QHBoxLayout()
        buttons.addWidget(self.convert_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.bar, 1)
        # No icons on these three: with them the row was wider than the dock's 300 px at 1280x800.
        after = QHBoxLayout(spacing=4)
        after.addWidget(self.chat_button)
        after.addWidget(self.evaluate_button)
        after.addWidget(self.publish_button)
        after.addStretch(1)
        # The outcome (message, then what to do next) sits right under the bar, above the progress
        # lines (empty once it is over), and is scrolled into view: in a short dock it was below the fold.
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 6, 4, 6)
        layout.addLayout(row)
        layout.addLayout(options)
        layout.addLayout(buttons)
        layout.addWidget(self.message)
        layout.addLayout(after)
        layout.addWidget(self.status)
        layout.addStretch(1)
        controller.project_changed.connect(self._project_changed)
        controller.policy_named.connect(lambda _: self._suggest_output())

    @property
    def busy(self) -> bool:
        return self.worker is not None and self.worker.isRunning()

    def _project_changed(self, project) -> None:
        if project is None or self.busy:
            return
        self.output.clear()  # the previous model's folder
        self._suggest_output()
        self.result = None
        self.chat_button.setVisible(False)
        self.evaluate_button.setVisible(False)
        self.publish_button.setVisible(False)
        self._reset_bar()
        self.say("")
        self.status.setText("Choose an output folder and press Convert.")

    def _suggest_output(self) -> None:
        """The default output folder names the policy (Model-config-i-mlx, Model-uniform-4bit-mlx) and
        follows it as presets change, until the user types or chooses a folder of their own."""
        project, policy = self.controller.project, self.controller.policy
        if project is None or policy is None or self.busy or self.output.text() not in ("", self._suggested):
            return
        inv = project.inventory
        self._suggested = str(suggested_output(inv.root, policy_stem(self.controller), name=inv.name,
                                               remote=inv.source.remote))
        self.output.setText(self._suggested)

    def say(self, text: str) -> None:
        """An outcome in the wrapping message line (the progress lines stay for progress)."""
        self.message.setText(_breakable(text))
        self.message.setVisible(bool(text))

    def _reset_bar(self) -> None:
        self.bar.setEnabled(True)
        self.bar.setTextVisible(True)
        self.bar.setFormat("%p%")
        self.bar.setValue(0)
        self.status.setVisible(True)

    def _stop_bar(self, word: str) -> str:
        """A stopped bar is greyed, never a blue bar that looks alive, and carries no text: grey text
        on a greyed chunk was unreadable. The words ("Cancelled at 37%") go to the message line."""
        self.bar.setTextVisible(False)
        self.bar.setEnabled(False)
        return f"{word} at {round(100 * self.bar.value() / max(self.bar.maximum(), 1))}%"

    def _show_outcome(self, text: str) -> None:
        """The run is over: its message and next steps replace the progress lines, in view."""
        self.status.setText("")
        self.status.setVisible(False)
        self.say(text)
        QTimer.singleShot(0, self._reveal_outcome)  # once the layout has placed the new widgets

    def _reveal_outcome(self) -> None:
        area = self.parentWidget()
        while area is not None and not isinstance(area, QScrollArea):
            area = area.parentWidget()
        if area is None:
            return
        self.layout().activate()
        last = self.publish_button if self.publish_button.isVisibleTo(self) else self.message
        bottom = last.mapTo(self, last.rect().bottomLeft()).y() + 6
        top = self.message.mapTo(self, self.message.rect().topLeft()).y() - 6
        bar = area.verticalScrollBar()  # vertically only: a sideways scroll would cut "Output:" off
        bar.setValue(min(top, max(bar.value(), bottom - area.viewport().height())))  # the message first

    def choose_output(self) -> None:
        start = self.output.text() or settings.get(settings.OUTPUT_DIR)
        path = QFileDialog.getExistingDirectory(self, "Output folder", str(Path(start).parent) if start else
                                                str(Path.home()))
        if path:
            self.output.setText(path)

    def _message(self, title: str, text: str) -> None:
        if not self.quiet:
            QMessageBox.warning(self, title, text)

    def start(self) -> bool:
        """Convert, after a question when the job is long. True when it started now; False when
        it cannot start or waits for the answer (`question` is open; Yes starts it)."""
        if self.busy or self.controller.project is None or self.question is not None:
            return False
        out = self.output.text().strip()
        if not out:
            self._refuse("Choose an output folder first.")
            return False
        if Path(out).exists() and not self.force.isChecked():
            self._refuse("That folder already exists. Tick Overwrite to replace it (the old one stays until the "
                         "new one is complete), or choose another folder.")
            return False
        self.controller.flush()
        text = convert_confirm.question(self.controller.project, out, self.calibrate.isChecked(),
                                        self.calibrate_method.currentData())
        if text is None:
            return self._begin(out)
        box = QMessageBox(QMessageBox.Icon.Question, "Convert", text,
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, self)
        box.button(QMessageBox.StandardButton.Yes).setText("Convert")
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)  # a second stray key press must not start it
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.finished.connect(lambda _: self._answered(box, out))
        self.question = box
        box.open()
        return False

    def _answered(self, box: QMessageBox, out: str) -> None:
        self.question = None
        if box.standardButton(box.clickedButton()) == QMessageBox.StandardButton.Yes:
            self._begin(out)

    def _refuse(self, text: str) -> None:
        self.say(text)
        self._message("Convert", text)

    def _begin(self, out: str) -> bool:
        from studio.core.calibration.calibrate import CalibrationCancelled
        from studio.core.calibration.methods import calibrate_and_convert
        from studio.core.convert import ConversionCancelled, convert  # loads MLX: only when converting

        snapshot = copy.copy(self.controller.project)  # later policy edits must not reach the running plan
        options = dict(force=self.force.isChecked(), measure_errors=self.measure.isChecked())
        if self.calibrate.isChecked():  # the ETA covers both steps, from the time the user was told
            method = self.calibrate_method.currentData()
            fn = functools.partial(calibrate_and_convert, snapshot, out, method=method,
                                   expected=convert_confirm.expected(snapshot, calibrate=True, method=method),
                                   **options)
        else:
            fn = functools.partial(convert, snapshot, out, **options)
        self.worker = Worker(fn, cancelled_errors=(ConversionCancelled, CalibrationCancelled), interval_s=0.1,
                             parent=self)
        self.worker.progress.connect(self._progress)
        self.worker.succeeded.connect(self._succeeded)
        self.worker.failed.connect(self._failed)
        self.worker.cancelled.connect(self._cancelled)
        settings.put(settings.OUTPUT_DIR, out)
        self.result = None
        self.chat_button.setVisible(False)
        self.evaluate_button.setVisible(False)
        self.publish_button.setVisible(False)
        self.convert_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._reset_bar()
        self.say("")
        self._snapshot = snapshot
        self.status.setText(f"Converting to {out} …")
        self.worker.start()
        return True

    def cancel(self) -> None:
        if self.busy:
            self.worker.cancel()
            self.cancel_button.setEnabled(False)
            self.status.setText("Cancelling after the current tensor …")

    def _progress(self, p) -> None:
        """`p` is a studio.core.convert.Progress; a calibrated conversion's names its step and
        carries the bar and ETA over both steps."""
        self.bar.setValue(int(1000 * p.overall_fraction))
        left = f"about {_duration(p.overall_eta_s)} left" + (" in all" if p.stage else "")
        if p.phase == "calibrating":
            self.status.setText(f"Step 1 of 2, calibrating: {p.unit}\n"
                                f"{p.units_done} of {p.units_total} parts of the pass, about {_duration(p.eta_s)} to go\n{left}")
            return
        step = f"Step 2 of 2, {p.phase}" if p.stage else p.phase.capitalize()
        self.status.setText(f"{step} {p.unit}\n{p.units_done}/{p.units_total} units, "
                            f"{human_bytes(p.bytes_done)} of {human_bytes(p.bytes_total)}\n"
                            f"{human_bytes(p.bytes_per_s)}/s, {left}")

    def _finish(self) -> None:
        self.convert_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self.worker is not None:
            self.worker.wait()

    def _succeeded(self, result) -> None:
        self._finish()
        self.result = result
        self.bar.setValue(1000)
        resumed = result.resumed_shards
        extra = f", {resumed} shard(s) resumed" if resumed else ""
        if not resumed:
            convert_confirm.remember_rate(self._snapshot, result.seconds)
        # What the run found and repaired (an interrupted --force move) is news to the user too.
        notes = "".join(f"\n{notice}" for notice in result.notices)
        self.chat_button.setVisible(True)
        self.evaluate_button.setVisible(True)
        self.publish_button.setVisible(True)
        self._show_outcome(f"Done: {result.path}\n{human_bytes(result.bytes_written)} written in "
                           f"{_duration(result.seconds)}{extra}.{notes}")
        self.conversion_finished.emit(result)

    def _failed(self, message: str) -> None:
        self._finish()
        self._show_outcome(f"{self._stop_bar('Failed')}: {message}")
        self._message("Conversion failed", message)
        self.conversion_stopped.emit(message)

    def _cancelled(self, message: str) -> None:
        self._finish()
        self._show_outcome(f"{self._stop_bar('Cancelled')}: {message}")
        self.conversion_stopped.emit(message)

    def open_publish(self) -> PublishDialog | None:
        if self.result is None:
            return None
        self.publish_dialog = PublishDialog(str(self.result.path), self)
        self.publish_dialog.open()
        return self.publish_dialog

    def shutdown(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        if self.publish_dialog is not None:
            self.publish_dialog.shutdown()
