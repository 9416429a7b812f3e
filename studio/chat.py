"""The chat pane: talk to the converted model, or to two models side by side.

One long-lived `ModelHost` thread owns the loaded models (one per side) and
takes requests from a queue, like mlx-lm's server. It sends text back in
batches (at most one signal per ~50 ms per reply), never one signal a token,
and it never touches a widget. Stop cancels the request's token, which the
generation loop checks on every token. The window stays responsive while a
model loads or generates because all MLX work happens on that thread.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Signal, Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from studio import settings
from studio.chat_host import ModelHost, Replies, Reply
from studio.core.cancel import CancelToken
from studio.core.runtime.generation import GenerationStats
from studio.views.conversation import CompareView, Conversation, ConversationView, SamplingControls, Turn
from studio.views.widgets import MessageEdit

__all__ = ["ChatPane", "CompareView", "Conversation", "ConversationView", "ModelHost", "SamplingControls", "Turn"]

SIDES = ("A", "B")

# --- the pane ----------------------------------------------------------------


@dataclass
class _Side:
    view: ConversationView
    label: QLabel
    loaded: bool = False
    path: str = ""
    pending: int | None = None  # request id of the reply in flight
    cancel: CancelToken | None = None
    loading: int | None = None  # request id of the load in flight


class ChatPane(QWidget):
    model_loaded = Signal(int, str)  # side, description
    reply_finished = Signal(int, object)  # side, GenerationStats (None if it failed)
    busy_changed = Signal(bool)
    error = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._host = ModelHost(self)
        self._host.loaded.connect(self._on_loaded)
        self._host.load_failed.connect(self._on_load_failed)
        self._host.reply_started.connect(self._on_started)
        self._host.chunk.connect(self._on_chunk)
        self._host.reply_done.connect(self._on_done)
        self._host.reply_failed.connect(self._on_failed)
        self._next_id = 0
        self._closed = False
        self._last_stats: dict[int, GenerationStats] = {}

        self.compare_view = CompareView(self)
        self.compare_box = QCheckBox("Compare two models")
        self.compare_box.toggled.connect(self.set_compare)
        self._sides: list[_Side] = []
        model_rows = QFormLayout()
        self._open_buttons = []
        for index, view in enumerate(self.compare_view.views):
            label = QLabel("no model")
            label.setTextInteractionFlags(Qt.TextSelectableByMouse)
            button = QPushButton("Open…")
            button.clicked.connect(lambda _=False, i=index: self._choose_model(i))
            row = QHBoxLayout()
            row.addWidget(label, 1)
            row.addWidget(button)
            self._open_buttons.append(button)
            model_rows.addRow(f"Model {SIDES[index]}", row)
            self._sides.append(_Side(view, label))
        model_rows.setRowVisible(1, False)
        self._model_rows = model_rows

        self.system_prompt = QLineEdit(placeholderText="System prompt (optional)")
        self.sampling = SamplingControls()
        self.input = MessageEdit(placeholderText="Message (Ctrl+Enter to send)")
        self.input.send_requested.connect(lambda: self.send())
        self.input.setFixedHeight(64)
        self.send_button = QPushButton("Send")
        self.send_button.setDefault(True)
        self.send_button.clicked.connect(lambda: self.send())
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)

        self.stats_label = QLabel("")
        self.stats_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.stats_label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)  # long stats never widen the pane
        copy_button = QPushButton("Copy")
        copy_button.clicked.connect(self.copy_transcript)
        save_button = QPushButton("Save…")
        save_button.clicked.connect(self._choose_save)
        clear_button = QPushButton("Clear")
        clear_button.clicked.connect(self.clear)

        top = QHBoxLayout()
        top.addLayout(model_rows, 1)
        top.addWidget(self.compare_box, 0, Qt.AlignTop)
        entry = QHBoxLayout()
        entry.addWidget(self.input, 1)
        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        entry.addLayout(buttons)
        bottom = QHBoxLayout()
        bottom.addWidget(self.stats_label, 1)
        for b in (copy_button, save_button, clear_button):
            bottom.addWidget(b)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.system_prompt)
        layout.addWidget(self.sampling)
        layout.addWidget(self.compare_view, 1)
        layout.addLayout(entry)
        layout.addLayout(bottom)
        self._refresh()

    # public API ------------------------------------------------------------

    def open_model(self, path: str | Path, side: int = 0) -> None:
        """Load a model folder on the host thread; model_loaded fires when ready."""
        if self._closed:
            return
        s = self._sides[side]
        was_busy = self.busy
        if s.cancel is not None:
            s.cancel.cancel()  # its late result is ignored: pending no longer matches
        s.pending, s.cancel = None, None
        s.loaded = False
        s.path = str(path)
        s.label.setText(f"loading {Path(path).name}…")
        s.view.conversation = Conversation()
        s.view.render()
        s.loading = self._new_id()  # an earlier load still on its way is ignored when it lands
        self._host.request_load(side, path, s.loading)
        self._refresh()
        if was_busy and not self.busy:
            self.busy_changed.emit(False)

    def set_compare(self, on: bool) -> None:
        if self.compare_box.isChecked() != on:
            self.compare_box.setChecked(on)  # re-enters through toggled
            return
        self._model_rows.setRowVisible(1, on)
        self.compare_view.set_compare(on)
        self._refresh()

    @property
    def compare(self) -> bool:
        return self.compare_box.isChecked()

    def send(self, text: str | None = None) -> bool:
        """Send a message to the model (both models in compare mode)."""
        from_input = text is None
        text = (self.input.toPlainText() if from_input else text).strip()
        sides = self._active_sides()
        if self._closed or not text or self.busy or not sides or not all(self._sides[i].loaded for i in sides):
            return False
        params = self.sampling.params()
        if params.seed is None and len(sides) > 1:
            # Compare fairly: one random seed for both models.
            params = dataclasses.replace(params, seed=random.randrange(2**31))
        system = self.system_prompt.text()
        if from_input:
            self.input.clear()
        replies = []
        for index in sides:
            s = self._sides[index]
            conv = s.view.conversation
            conv.turns.append(Turn("user", text))
            conv.streaming = ""
            s.pending, s.cancel = self._new_id(), CancelToken()
            replies.append(Reply(index, s.pending, conv.history(), params, system, s.cancel))
            s.view.render()
        self._host.request_reply(Replies(replies))  # one request: the sides stream together
        self._last_stats.clear()
        self.stats_label.setStyleSheet("")
        self.stats_label.setText("generating…")
        self._refresh()
        self.busy_changed.emit(True)
        return True

    def stop(self) -> None:
        """End the replies in flight at the next token; what came so far stays."""
        for s in self._sides:
            if s.cancel is not None:
                s.cancel.cancel()

    @property
    def busy(self) -> bool:
        return any(s.pending is not None for s in self._sides)

    def conversation(self, side: int = 0) -> Conversation:
        return self._sides[side].view.conversation

    def clear(self) -> None:
        """Stop the replies in flight and empty both conversations now; what the stopped replies
        still send is dropped (their ids are no longer awaited)."""
        was_busy = self.busy
        self.stop()
        for s in self._sides:
            s.pending, s.cancel = None, None
            conv = s.view.conversation
            conv.turns.clear()
            conv.expanded.clear()
            conv.streaming, conv.streaming_inside = None, False
            s.view.render()
        self._last_stats.clear()
        self.stats_label.setStyleSheet("")
        self.stats_label.setText("")
        self._refresh()
        if was_busy:
            self.busy_changed.emit(False)

    def model_changed(self, project) -> None:
        """Another model is open in the window: the chat starts empty, with no model on either side
        (they were the previous model's conversions) and no comparison."""
        self.clear()
        self.set_compare(False)
        for side, s in enumerate(self._sides):
            if s.cancel is not None:
                s.cancel.cancel()
            s.pending, s.cancel, s.loaded, s.path = None, None, False, ""
            s.loading = self._new_id()  # a load still on its way is ignored, and its model freed after it
            self._host.request_unload(side, s.loading)
            s.label.setText("no model")
            s.view.conversation = Conversation()
            s.view.render()
        self.stats_label.setText("")
        self._refresh()

    def transcript(self) -> str:
        """The conversation as Markdown (both sides in compare mode)."""
        parts = []
        if self.system_prompt.text().strip():
            parts.append(f"**System:** {self.system_prompt.text().strip()}\n")
        for index in self._active_sides():
            s = self._sides[index]
            if len(self._active_sides()) > 1 or s.path:
                parts.append(f"## Model {SIDES[index]}: {s.view.conversation.model or s.path}\n")
            for turn in s.view.conversation.turns:
                who = "You" if turn.role == "user" else "Model"
                parts.append(f"**{who}:** {turn.content}\n")
                if turn.stats is not None:
                    parts.append(f"_{turn.stats.summary()}_\n")
        return "\n".join(parts)

    def copy_transcript(self) -> None:
        QGuiApplication.clipboard().setText(self.transcript())

    def save_transcript(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.transcript(), encoding="utf-8")
        self.stats_label.setText(f"saved {path.name}")
        return path

    def shutdown(self) -> None:
        """Stop generating and join the model-host thread. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        self._host.stop()
        self._host.quit()
        self._host.wait()

    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)

    # internals -------------------------------------------------------------

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _active_sides(self) -> list[int]:
        return [0, 1] if self.compare else [0]

    def _refresh(self) -> None:
        sides = self._active_sides()
        ready = all(self._sides[i].loaded for i in sides)
        self.send_button.setEnabled(ready and not self.busy)
        self.stop_button.setEnabled(self.busy)
        for button in self._open_buttons:
            button.setEnabled(not self.busy)
        self.compare_box.setEnabled(not self.busy)

    def _choose_model(self, side: int) -> None:
        folder = QFileDialog.getExistingDirectory(self, f"Open model {SIDES[side]}",
                                                  settings.start_folder(settings.OUTPUT_DIR))
        if folder:
            self.open_model(folder, side)

    def _choose_save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save transcript", str(Path.home() / "chat.md"), "Markdown (*.md);;Text (*.txt)")
        if path:
            self.save_transcript(path)

    def _on_loaded(self, side: int, request_id: int, description: str) -> None:
        s = self._sides[side]
        if s.loading != request_id:
            return  # a model the user has since replaced
        s.loading = None
        s.loaded = True
        s.label.setText(description)
        s.view.conversation.model = description
        s.view.render()
        self._refresh()
        self.model_loaded.emit(side, description)

    def _on_load_failed(self, side: int, request_id: int, message: str) -> None:
        s = self._sides[side]
        if s.loading != request_id:
            return
        s.loading = None
        s.label.setText("no model")
        self._show_error(message)
        self._refresh()

    def _on_started(self, side: int, request_id: int, inside: bool) -> None:
        s = self._sides[side]
        if s.pending == request_id:
            s.view.conversation.streaming_inside = inside

    def _on_chunk(self, side: int, request_id: int, text: str) -> None:
        s = self._sides[side]
        if s.pending != request_id or s.view.conversation.streaming is None:
            return
        s.view.conversation.streaming += text
        s.view.render()

    def _finish(self, side: int, request_id: int, stats) -> bool:
        s = self._sides[side]
        if s.pending != request_id:
            return False
        conv = s.view.conversation
        conv.turns.append(Turn("assistant", conv.streaming or "", stats, conv.streaming_inside))
        conv.streaming, conv.streaming_inside = None, False
        s.pending, s.cancel = None, None
        s.view.render()
        self._refresh()
        if not self.busy:
            self.busy_changed.emit(False)
        return True

    def _on_done(self, side: int, request_id: int, stats) -> None:
        if self._finish(side, request_id, stats):
            self._last_stats[side] = stats
            self.stats_label.setStyleSheet("")
            if self.compare:
                text = "   |   ".join(
                    f"{SIDES[i]}: {self._last_stats[i].summary()}" for i in self._active_sides() if i in self._last_stats
                )
            else:
                text = stats.summary()
            self.stats_label.setText(text)
            self.reply_finished.emit(side, stats)

    def _on_failed(self, side: int, request_id: int, message: str) -> None:
        if self._finish(side, request_id, None):
            self._show_error(message)
            self.reply_finished.emit(side, None)

    def _show_error(self, message: str) -> None:
        self.stats_label.setStyleSheet("color: #c0392b;")
        self.stats_label.setText(message)
        self.error.emit(message)
