"""One long job at a time on the worker thread, for a window control that starts and cancels it.

The survey and the sensitivity pass differ only in the job they run and where
its result goes; the worker's lifecycle (join a running job, forward progress,
cancel, clean up after success, failure or cancel) is the same, so it lives here.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from studio.worker import Worker


class JobRunner(QObject):
    started = Signal()
    progress = Signal(object)
    finished = Signal(object)
    stopped = Signal(str)       # cancelled or failed: the sentence

    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.worker: Worker | None = None
        self._project = None  # the project the running job reads

    def _job(self, project):
        """(callable taking progress= and cancel=, the exception types that mean 'cancelled')."""
        raise NotImplementedError

    def _store(self, project, result) -> None:
        """Keep the result of a job that ran on `project`."""
        raise NotImplementedError

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def start(self) -> bool:
        """Start the job on the open model (or join the running one); False if no model is open."""
        project = self.controller.project
        if project is None:
            return False
        if self.worker is not None:
            return True
        fn, cancelled_errors = self._job(project)
        self._project = project
        self.worker = Worker(fn, cancelled_errors=cancelled_errors, parent=self)
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
        self._store(self._project, result)
        self.finished.emit(result)

    def _stopped(self, reason: str) -> None:
        self._done()
        self.stopped.emit(reason)

    def shutdown(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self._done()
