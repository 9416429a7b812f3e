"""The cancel flag every long job checks between steps (conversion, survey, evaluation)."""

import threading


class CancelToken:
    """Thread-safe: the window or Ctrl-C sets it, the worker checks it between steps."""

    def __init__(self):
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()
