"""Runs the error survey on the worker thread and hands the result to the controller.

One survey at a time. The window's "Show error" and "Fit to budget…" both ask
for one; a caller that needs the result passes `then`, called on the GUI thread
with the Survey once it has been stored on the controller.
"""

from __future__ import annotations

import functools
from typing import Callable

from PySide6.QtCore import QObject, Signal

from studio.worker import Worker


class SurveyRunner(QObject):
    started = Signal()
    progress = Signal(object)   # SurveyProgress
    finished = Signal(object)   # Survey
    stopped = Signal(str)       # cancelled or failed: the sentence

    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.worker: Worker | None = None
        self.max_elements: int | None = None  # tests: a smaller sample
        self._then: list[Callable] = []
        self._project = None

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def start(self, then: Callable | None = None) -> bool:
        """Start a survey of the current plan (or join the running one); False if no model is open."""
        project = self.controller.project
        if project is None:
            return False
        if then is not None:
            self._then.append(then)
        if self.worker is not None:
            return True
        from studio.core.quant_error.survey import DEFAULT_MAX_ELEMENTS, SurveyCancelled, survey

        self._project = project
        self.controller.flush()  # survey the plan of the policy on screen, not a throttled older one
        fn = functools.partial(survey, project, max_elements_per_unit=self.max_elements or DEFAULT_MAX_ELEMENTS)
        self.worker = Worker(fn, cancelled_errors=(SurveyCancelled,), parent=self)
        self.worker.progress.connect(self.progress)
        self.worker.succeeded.connect(self._succeeded)
        self.worker.failed.connect(self._stopped)
        self.worker.cancelled.connect(self._stopped)
        self.worker.start()
        self.started.emit()
        return True

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()

    def _done(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.wait()
            worker.deleteLater()

    def _succeeded(self, result) -> None:
        self._done()
        if self.controller.project is self._project:  # not a model closed meanwhile
            self.controller.set_errors(result.error_map(), result)
        then, self._then = self._then, []
        self.finished.emit(result)
        for callback in then:
            callback(result)

    def _stopped(self, reason: str) -> None:
        self._done()
        self._then = []
        self.stopped.emit(reason)

    def shutdown(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self._done()
