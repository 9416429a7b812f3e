"""Runs the calibration pass (output-space sensitivity) on the worker thread and keeps its result.

The grid's "Sensitivity" heat map and "Fit to budget…" read `stats` once it is
measured for the open model. The pass is cached on disk by the core, so a
second request for the same model is instant.
"""

from __future__ import annotations

import functools

from PySide6.QtCore import QObject, Signal

from studio.worker import Worker


class SensitivityRunner(QObject):
    started = Signal()
    progress = Signal(object)   # CalibrationProgress
    finished = Signal(object)   # CalibrationStats
    stopped = Signal(str)       # cancelled or failed: the sentence

    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.worker: Worker | None = None
        self._project = None
        self._stats = None  # (project, CalibrationStats)

    @property
    def stats(self):
        """The measured CalibrationStats of the open model, or None."""
        if self._stats is not None and self._stats[0] is self.controller.project:
            return self._stats[1]
        return None

    def start(self) -> bool:
        """Measure the open model's sensitivity (or join the running pass); False if no model is open."""
        project = self.controller.project
        if project is None:
            return False
        if self.worker is not None:
            return True
        from studio.core.calibration.calibrate import CalibrationCancelled, calibrate

        self._project = project
        self.worker = Worker(functools.partial(calibrate, project, sensitivity=True),
                             cancelled_errors=(CalibrationCancelled,), parent=self)
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

    def _succeeded(self, stats) -> None:
        self._done()
        self._stats = (self._project, stats)
        self.finished.emit(stats)

    def _stopped(self, reason: str) -> None:
        self._done()
        self.stopped.emit(reason)

    def shutdown(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self._done()
