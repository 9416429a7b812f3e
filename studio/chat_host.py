"""The thread that owns the chat's loaded models and takes requests from a queue.

Like mlx-lm's server: one long-lived thread, one model per side, requests in
order. Text goes back in batches (at most one signal per ~50 ms per reply),
never one signal a token, and the thread never touches a widget.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QThread, Signal

from studio.core.cancel import CancelToken
from studio.core.errors import StudioError
from studio.core.runtime.generation import SamplingParams
from studio.core.runtime.mlx_thread import release_thread_streams


@dataclass
class Load:
    side: int
    path: str


@dataclass
class Reply:
    side: int
    request_id: int
    history: list
    params: SamplingParams
    system: str
    cancel: CancelToken


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
        self._requests.put(Load(side, str(path)))

    def request_reply(self, request: Reply) -> None:
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
            if isinstance(request, Load):
                self._load(request)
            else:
                self._reply(request)
        self._models.clear()
        release_thread_streams()

    def _load(self, request: Load) -> None:
        from studio.core.runtime.generation import load_model

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

    def _reply(self, request: Reply) -> None:
        from studio.core.runtime.generation import build_prompt, prompt_opens_think, stream_tokens

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
