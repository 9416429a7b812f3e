"""The thread that owns the chat's loaded models and takes requests from a queue.

Like mlx-lm's server: one long-lived thread, one model per side. Text goes back
in batches (at most one signal per ~50 ms per reply), never one signal a token,
and the thread never touches a widget.

Every request carries an id, and so does every signal it causes: the pane keeps
the id it is waiting for per side and drops anything else, so a late reply or
load from a model or conversation the user has since left is ignored.

Compare mode sends one message to both sides as one `Replies` request. The two
replies run interleaved, one token each in turn, so B starts streaming as soon as
A has read its prompt rather than after A's whole reply. They are not run on two
threads: MLX runs on one stream here (the CPU backend's single queue; on Metal a
second stream would only take turns on the same GPU), so taking turns token by
token costs nothing against true concurrency and keeps one thread owning the
models. Sampling stays reproducible: with a seed, the same message gives the same
pair of replies (both sides start from the seed, in a fixed order), though not
the replies that seed gives a side alone.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from PySide6.QtCore import QThread, Signal

from studio.core.cancel import CancelToken
from studio.core.errors import StudioError
from studio.core.runtime.generation import SamplingParams
from studio.core.runtime.mlx_thread import release_thread_streams


@dataclass
class Load:
    side: int
    path: str
    request_id: int = 0


@dataclass
class Unload:
    """Free a side's model: another model is open in the window, its conversions are not chatted with."""

    side: int
    request_id: int = 0


@dataclass
class Reply:
    side: int
    request_id: int
    history: list
    params: SamplingParams
    system: str
    cancel: CancelToken


@dataclass
class Replies:
    """One message to several sides: started together, their tokens interleaved."""

    replies: list[Reply]


@dataclass
class _Running:
    request: Reply
    tokens: Iterator
    buffer: list[str] = field(default_factory=list)
    last_flush: float = field(default_factory=time.monotonic)
    stats: object = None


class ModelHost(QThread):
    """Owns the loaded models; serves loads one at a time and replies a token at a time, in turn."""

    loaded = Signal(int, int, str)  # side, request id, description
    load_failed = Signal(int, int, str)  # side, request id, one sentence
    reply_started = Signal(int, int, bool)  # side, request id, the template opened a think block
    chunk = Signal(int, int, str)  # side, request id, batched text
    reply_done = Signal(int, int, object)  # side, request id, GenerationStats
    reply_failed = Signal(int, int, str)  # side, request id, one sentence
    unloaded = Signal(int, int)  # side, request id: its model's memory is free

    FLUSH_S = 0.05

    def __init__(self, parent=None):
        super().__init__(parent)
        self._requests: queue.Queue = queue.Queue()
        self._models: dict[int, object] = {}

    def request_load(self, side: int, path: str | Path, request_id: int) -> None:
        self._ensure_running()
        self._requests.put(Load(side, str(path), request_id))

    def request_unload(self, side: int, request_id: int) -> None:
        if self.isRunning():  # a host never started holds no model
            self._requests.put(Unload(side, request_id))

    def request_reply(self, request: Reply | Replies) -> None:
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
        running: list[_Running] = []
        while True:
            try:  # wait for work only when no reply is generating
                request = self._requests.get(block=not running)
            except queue.Empty:
                running = [r for r in running if self._step(r)]  # one token each, in turn
                continue
            if request is None:
                break
            if isinstance(request, (Load, Unload)):
                # Replies on that side are cancelled (the pane did it): let them end before the model goes.
                for r in [r for r in running if r.request.side == request.side]:
                    while self._step(r):
                        pass
                    running.remove(r)
                if isinstance(request, Load):
                    self._load(request)
                else:
                    self._models.pop(request.side, None)
                    self.unloaded.emit(request.side, request.request_id)
            else:
                for reply in request.replies if isinstance(request, Replies) else [request]:
                    started = self._start(reply)
                    if started is not None:
                        running.append(started)
        for r in running:  # stopping: end what is left at its next token
            r.request.cancel.cancel()
            while self._step(r):
                pass
        self._models.clear()
        release_thread_streams()

    def _load(self, request: Load) -> None:
        from studio.core.runtime.generation import load_model

        side, rid = request.side, request.request_id
        self._models.pop(side, None)  # free the old model first
        try:
            loaded = load_model(request.path)
        except StudioError as exc:
            self.load_failed.emit(side, rid, str(exc))
        except Exception as exc:  # a worker never dies silently
            self.load_failed.emit(side, rid, f"Loading failed: {type(exc).__name__}: {exc}")
        else:
            self._models[side] = loaded
            self.loaded.emit(side, rid, loaded.describe())

    def _start(self, request: Reply) -> _Running | None:
        from studio.core.runtime.generation import build_prompt, prompt_opens_think, stream_tokens

        side, rid = request.side, request.request_id
        loaded = self._models.get(side)
        if loaded is None:
            self.reply_failed.emit(side, rid, "No model is loaded on this side.")
            return None
        try:
            prompt = build_prompt(loaded.tokenizer, request.history, request.system)
            self.reply_started.emit(side, rid, prompt_opens_think(loaded, prompt))
            tokens = stream_tokens(loaded, prompt, request.params, cancel=request.cancel)
        except Exception as exc:  # a worker never dies silently
            self.reply_failed.emit(side, rid, _sentence(exc))
            return None
        return _Running(request, iter(tokens))

    def _step(self, r: _Running) -> bool:
        """One token of `r` (its prompt, the first time); False once the reply has ended."""
        side, rid = r.request.side, r.request.request_id
        try:
            piece = next(r.tokens)
        except StopIteration:
            self._flush(r)
            self.reply_done.emit(side, rid, r.stats)
            return False
        except Exception as exc:  # a worker never dies silently
            self._flush(r)  # keep what came before the failure
            self.reply_failed.emit(side, rid, _sentence(exc))
            return False
        if piece.text:
            r.buffer.append(piece.text)
        r.stats = piece.stats or r.stats
        if r.buffer and time.monotonic() - r.last_flush >= self.FLUSH_S:
            self._flush(r)
        return True

    def _flush(self, r: _Running) -> None:
        if r.buffer:
            self.chunk.emit(r.request.side, r.request.request_id, "".join(r.buffer))
            r.buffer.clear()
        r.last_flush = time.monotonic()


def _sentence(exc: Exception) -> str:
    return str(exc) if isinstance(exc, StudioError) else f"Generation failed: {type(exc).__name__}: {exc}"
