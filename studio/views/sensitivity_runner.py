"""Runs the calibration pass (output-space sensitivity) on the worker thread and keeps its result.

The grid's "Sensitivity" heat map and "Fit to budget…" read `stats` once it is
measured for the open model. The pass is cached on disk by the core, so a
second request for the same model is instant.
"""

from __future__ import annotations

import functools

from studio.views.job_runner import JobRunner


class SensitivityRunner(JobRunner):
    """progress: CalibrationProgress; finished: CalibrationStats."""

    def __init__(self, controller, parent=None):
        super().__init__(controller, parent)
        self._stats = None  # (project, CalibrationStats)

    @property
    def stats(self):
        """The measured CalibrationStats of the open model, or None."""
        if self._stats is not None and self._stats[0] is self.controller.project:
            return self._stats[1]
        return None

    def _job(self, project):
        from studio.core.calibration.calibrate import CalibrationCancelled, calibrate

        return functools.partial(calibrate, project, sensitivity=True), (CalibrationCancelled,)

    def _store(self, project, stats) -> None:
        self._stats = (project, stats)
