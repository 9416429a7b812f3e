"""A cooperative worker: run one callable on a QThread with progress and cancel.

The callable receives `progress=` (a callback it may call as often as it likes)
and `cancel=` (a token whose `cancelled` it checks between steps). Progress
reaches the GUI thread at most once per `interval_s`, plus the last value; the
result or the error comes back as a signal. Nothing here touches a widget, and
the thread is never terminated: `cancel()` asks, `stop()` asks and waits.
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import Callable

from PySide6.QtCore import QObject, QThread, Signal

from studio.core.cancel import CancelToken
from studio.core.errors import StudioError
from studio.core.runtime.mlx_thread import release_thread_streams


class Worker(QThread):
    progress = Signal(object)
    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal(str)

    def __init__(self, fn: Callable, *, token=None, interval_s: float = 0.1,
                 cancelled_errors: tuple[type[BaseException], ...] = (), parent: QObject | None = None):
        super().__init__(parent)
        self._fn = fn
        self.token = token if token is not None else CancelToken()
        self._interval = interval_s
        self._cancelled_errors = cancelled_errors
        self._last_emit = 0.0
        self._pending = None
        self._lock = threading.Lock()
        self.result = None
        self.error: str | None = None

    def _report(self, value) -> None:
        now = time.monotonic()
        with self._lock:
            self._pending = value
            if now - self._last_emit < self._interval:
                return
            self._last_emit = now
            self._pending = None
        self.progress.emit(value)

    def _flush(self) -> None:
        with self._lock:
            value, self._pending = self._pending, None
        if value is not None:
            self.progress.emit(value)

    def run(self) -> None:
        try:
            self._run()
        finally:
            release_thread_streams()

    def _run(self) -> None:
        try:
            self.result = self._fn(progress=self._report, cancel=self.token)
        except self._cancelled_errors as exc:
            self._flush()
            self.error = str(exc) or "cancelled"
            self.cancelled.emit(self.error)
            return
        except StudioError as exc:
            self._flush()
            self.error = str(exc)
            (self.cancelled if self.token.cancelled else self.failed).emit(self.error)
            return
        except Exception as exc:  # noqa: BLE001 - a worker must report, never die silently
            self._flush()
            traceback.print_exc()
            self.error = f"Unexpected error: {type(exc).__name__}: {exc}"
            self.failed.emit(self.error)
            return
        self._flush()
        self.succeeded.emit(self.result)

    def cancel(self) -> None:
        self.token.cancel()

    def stop(self, timeout_ms: int = 30000) -> bool:
        """Ask the work to stop and wait for the thread; True if it ended."""
        self.cancel()
        self.quit()
        return self.wait(timeout_ms)
