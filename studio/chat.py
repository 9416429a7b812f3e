"""The chat pane: talk to the converted model, or to two models side by side.

One long-lived `ModelHost` thread owns the loaded models (one per side) and
takes requests from a queue, like mlx-lm's server. It sends text back in
batches (at most one signal per ~50 ms per reply), never one signal a token,
and it never touches a widget. Stop sets the request's cancel flag, which the
generation loop checks on every token. The window stays responsive while a
model loads or generates because all MLX work happens on that thread.
"""

from __future__ import annotations

import dataclasses
import html
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QThread, QUrl, Signal, Qt
from PySide6.QtGui import QGuiApplication, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from studio.core.errors import StudioError
from studio.core.mlx_thread import release_thread_streams
from studio.core.generation import GenerationStats, SamplingParams, split_thinking

SIDES = ("A", "B")


# --- the thread that owns the models -----------------------------------------


@dataclass
class _Load:
    side: int
    path: str


@dataclass
class _Reply:
    side: int
    request_id: int
    history: list
    params: SamplingParams
    system: str
    cancel: threading.Event


class ModelHost(QThread):
    """Owns the loaded models and serves load / reply requests one at a time."""

    loaded = Signal(int, str)  # side, description
    load_failed = Signal(int, str)  # side, one sentence
    reply_started = Signal(int, int, bool)  # side, request id, the template opened a think block
    chunk = Signal(int, int, str)  # side, request id, batched text
    reply_done = Signal(int, int, object)  # side, request id, GenerationStats
    reply_failed = Signal(int, int, str)  # side, request id, one sentence

    FLUSH_S = 0.05

    def __init__(self, parent=None):
        super().__init__(parent)
        self._requests: queue.Queue = queue.Queue()
        self._models: dict[int, object] = {}

    def request_load(self, side: int, path: str | Path) -> None:
        self._ensure_running()
        self._requests.put(_Load(side, str(path)))

    def request_reply(self, request: _Reply) -> None:
        self._ensure_running()
        self._requests.put(request)

    def stop(self) -> None:
        """Ask the loop to end after the current request; pair with wait()."""
        if self.isRunning():
            self._requests.put(None)

    def _ensure_running(self) -> None:
        if not self.isRunning():
            self.start()

    def run(self) -> None:
        while True:
            request = self._requests.get()
            if request is None:
                break
            if isinstance(request, _Load):
                self._load(request)
            else:
                self._reply(request)
        self._models.clear()
        release_thread_streams()

    def _load(self, request: _Load) -> None:
        from studio.core.generation import load_model

        self._models.pop(request.side, None)  # free the old model first
        try:
            loaded = load_model(request.path)
        except StudioError as exc:
            self.load_failed.emit(request.side, str(exc))
        except Exception as exc:  # a worker never dies silently
            self.load_failed.emit(request.side, f"Loading failed: {type(exc).__name__}: {exc}")
        else:
            self._models[request.side] = loaded
            self.loaded.emit(request.side, loaded.describe())

    def _reply(self, request: _Reply) -> None:
        from studio.core.generation import build_prompt, prompt_opens_think, stream_tokens

        side, rid = request.side, request.request_id
        loaded = self._models.get(side)
        if loaded is None:
            self.reply_failed.emit(side, rid, "No model is loaded on this side.")
            return
        buffer: list[str] = []
        last_flush = time.monotonic()
        stats = None
        try:
            prompt = build_prompt(loaded.tokenizer, request.history, request.system)
            self.reply_started.emit(side, rid, prompt_opens_think(loaded, prompt))
            for piece in stream_tokens(loaded, prompt, request.params, cancel=request.cancel):
                if piece.text:
                    buffer.append(piece.text)
                stats = piece.stats or stats
                now = time.monotonic()
                if buffer and now - last_flush >= self.FLUSH_S:
                    self.chunk.emit(side, rid, "".join(buffer))
                    buffer.clear()
                    last_flush = now
        except Exception as exc:  # a worker never dies silently
            message = str(exc) if isinstance(exc, StudioError) else f"Generation failed: {type(exc).__name__}: {exc}"
            if buffer:  # keep what came before the failure
                self.chunk.emit(side, rid, "".join(buffer))
            self.reply_failed.emit(side, rid, message)
            return
        if buffer:
            self.chunk.emit(side, rid, "".join(buffer))
        self.reply_done.emit(side, rid, stats)


# --- rendering ---------------------------------------------------------------


@dataclass
class Turn:
    role: str  # "user" | "assistant"
    content: str
    stats: GenerationStats | None = None
    starts_inside: bool = False  # the chat template opened a think block before the reply


@dataclass
class Conversation:
    """One side's chat: finished turns plus the reply streaming in."""

    turns: list[Turn] = field(default_factory=list)
    streaming: str | None = None  # None when no reply is in flight
    streaming_inside: bool = False
    expanded: set = field(default_factory=set)  # turn indexes whose reasoning is open
    model: str = ""

    def history(self) -> list[dict]:
        return [{"role": t.role, "content": t.content} for t in self.turns]


def _para(text: str) -> str:
    return html.escape(text).replace("\n", "<br>")


class ConversationView(QTextBrowser):
    """Renders a Conversation as HTML; reasoning collapsed behind a link."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setOpenLinks(False)
        self.anchorClicked.connect(self._toggle)
        self.conversation = Conversation()
        self.document().setDefaultStyleSheet(
            ".you { font-weight: 600; color: #2f6db3; } .model { font-weight: 600; color: #2e8b57; }"
            " .think { color: #7a7a7a; } .stats { color: #8a8a8a; font-size: small; }"
            " a { color: #5b7fb8; text-decoration: none; }"
        )

    def render(self) -> None:
        bar = self.verticalScrollBar()
        at_bottom = bar.value() >= bar.maximum() - 4
        self.setHtml(self._html())
        if at_bottom:
            bar.setValue(bar.maximum())

    def _html(self) -> str:
        conv = self.conversation
        if not conv.turns and conv.streaming is None:
            hint = "Open a model, then type a message below." if not conv.model else f"Chat with {conv.model}."
            return f"<p class='think'>{html.escape(hint)}</p>"
        parts = []
        for index, turn in enumerate(conv.turns):
            if turn.role == "user":
                parts.append(f"<p><span class='you'>You</span><br>{_para(turn.content)}</p>")
            else:
                parts.append(self._assistant(index, turn.content, turn.starts_inside, False, turn.stats))
        if conv.streaming is not None:
            parts.append(self._assistant(len(conv.turns), conv.streaming, conv.streaming_inside, True, None))
        return "".join(parts)

    def _assistant(self, index: int, text: str, inside: bool, streaming: bool, stats) -> str:
        split = split_thinking(text, starts_inside=inside, streaming=streaming)
        out = ["<p><span class='model'>Model</span>"]
        if split.thinking or split.thinking_open:
            open_ = index in self.conversation.expanded
            label = "Thinking…" if split.thinking_open and streaming else f"Thought ({len(split.thinking.split())} words)"
            arrow = "▾" if open_ else "▸"
            out.append(f"<br><a href='think:{index}'>{arrow} {html.escape(label)}</a>")
            if open_ and split.thinking:
                out.append(f"<br><span class='think'><i>{_para(split.thinking)}</i></span>")
        body = split.answer + (" ▍" if streaming else "")
        out.append(f"<br>{_para(body)}")
        if stats is not None:
            out.append(f"<br><span class='stats'>{html.escape(stats.summary())}</span>")
        out.append("</p>")
        return "".join(out)

    def _toggle(self, url: QUrl) -> None:
        text = url.toString()
        if not text.startswith("think:"):
            return
        index = int(text.split(":", 1)[1])
        self.conversation.expanded ^= {index}
        self.render()


class CompareView(QSplitter):
    """Two conversation views side by side; the second shows in compare mode."""

    def __init__(self, parent=None):
        super().__init__(Qt.Horizontal, parent)
        self.views = (ConversationView(self), ConversationView(self))
        for view in self.views:
            self.addWidget(view)
        self.views[1].hide()

    def set_compare(self, on: bool) -> None:
        self.views[1].setVisible(on)


# --- controls ----------------------------------------------------------------


class SamplingControls(QWidget):
    """Temperature, top-p, top-k, max tokens, repetition penalty, seed."""

    def __init__(self, parent=None):
        super().__init__(parent)
        d = SamplingParams()
        self.temperature = self._double(0.0, 5.0, 0.05, d.temperature, "0 is greedy")
        self.top_p = self._double(0.01, 1.0, 0.01, d.top_p, "nucleus sampling; 1 is off")
        self.top_k = self._int(0, 100000, 1, d.top_k, "keep the k likeliest tokens")
        self.top_k.setSpecialValueText("off")
        self.max_tokens = self._int(1, 131072, 64, d.max_tokens, "most tokens per reply")
        self.repetition_penalty = self._double(0.5, 2.0, 0.05, d.repetition_penalty, "1 is off")
        self.seed = self._int(-1, 2**31 - 1, 1, -1, "the same seed gives the same reply; compare mode sends one seed to both models")
        self.seed.setSpecialValueText("random")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        for label, widget in (
            ("Temp", self.temperature), ("Top-p", self.top_p), ("Top-k", self.top_k),
            ("Max tokens", self.max_tokens), ("Rep. penalty", self.repetition_penalty), ("Seed", self.seed),
        ):
            row.addWidget(QLabel(label))
            row.addWidget(widget)
        row.addStretch(1)

    @staticmethod
    def _int(lo, hi, step, value, tip) -> QSpinBox:
        box = QSpinBox()
        box.setRange(lo, hi)
        box.setSingleStep(step)
        box.setValue(value)
        box.setToolTip(tip)
        return box

    @staticmethod
    def _double(lo, hi, step, value, tip) -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setDecimals(2)
        box.setRange(lo, hi)
        box.setSingleStep(step)
        box.setValue(value)
        box.setToolTip(tip)
        return box

    def params(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature.value(),
            top_p=self.top_p.value(),
            top_k=self.top_k.value(),
            max_tokens=self.max_tokens.value(),
            repetition_penalty=self.repetition_penalty.value(),
            seed=None if self.seed.value() < 0 else self.seed.value(),
        )

    def set_params(self, p: SamplingParams) -> None:
        self.temperature.setValue(p.temperature)
        self.top_p.setValue(p.top_p)
        self.top_k.setValue(p.top_k)
        self.max_tokens.setValue(p.max_tokens)
        self.repetition_penalty.setValue(p.repetition_penalty)
        self.seed.setValue(-1 if p.seed is None else p.seed)


# --- the pane ----------------------------------------------------------------


@dataclass
class _Side:
    view: ConversationView
    label: QLabel
    loaded: bool = False
    path: str = ""
    pending: int | None = None  # request id in flight
    cancel: threading.Event | None = None


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
        self.input = QPlainTextEdit(placeholderText="Message (Ctrl+Enter to send)")
        self.input.setFixedHeight(64)
        self.send_button = QPushButton("Send")
        self.send_button.setDefault(True)
        self.send_button.clicked.connect(lambda: self.send())
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            shortcut = QShortcut(QKeySequence(keys), self.input, activated=lambda: self.send())
            shortcut.setContext(Qt.WidgetShortcut)

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
        if s.cancel is not None:
            s.cancel.set()  # its late result is ignored: pending no longer matches
        s.pending, s.cancel = None, None
        s.loaded = False
        s.path = str(path)
        s.label.setText(f"loading {Path(path).name}…")
        s.view.conversation = Conversation()
        s.view.render()
        self._host.request_load(side, path)
        self._refresh()

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
        for index in sides:
            s = self._sides[index]
            conv = s.view.conversation
            conv.turns.append(Turn("user", text))
            conv.streaming = ""
            self._next_id += 1
            s.pending, s.cancel = self._next_id, threading.Event()
            self._host.request_reply(_Reply(index, s.pending, conv.history(), params, system, s.cancel))
            s.view.render()
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
                s.cancel.set()

    @property
    def busy(self) -> bool:
        return any(s.pending is not None for s in self._sides)

    def conversation(self, side: int = 0) -> Conversation:
        return self._sides[side].view.conversation

    def clear(self) -> None:
        self.stop()
        for s in self._sides:
            if s.pending is None:
                s.view.conversation.turns.clear()
                s.view.conversation.expanded.clear()
                s.view.render()
        self.stats_label.setText("")

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
        folder = QFileDialog.getExistingDirectory(self, f"Open model {SIDES[side]}")
        if folder:
            self.open_model(folder, side)

    def _choose_save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save transcript", "chat.md", "Markdown (*.md);;Text (*.txt)")
        if path:
            self.save_transcript(path)

    def _on_loaded(self, side: int, description: str) -> None:
        s = self._sides[side]
        s.loaded = True
        s.label.setText(description)
        s.view.conversation.model = description
        s.view.render()
        self._refresh()
        self.model_loaded.emit(side, description)

    def _on_load_failed(self, side: int, message: str) -> None:
        self._sides[side].label.setText("no model")
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
