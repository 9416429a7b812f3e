"""Runs the error survey on the worker thread and hands the result to the controller.

One survey at a time. The window's "Show error" and "Fit to budget…" both ask
for one; a caller that needs the result passes `then`, called on the GUI thread
with the Survey once it has been stored on the controller.
"""

from __future__ import annotations

import functools
from typing import Callable

from studio.views.job_runner import JobRunner


class SurveyRunner(JobRunner):
    """progress: SurveyProgress; finished: Survey."""

    def __init__(self, controller, parent=None):
        super().__init__(controller, parent)
        self.max_elements: int | None = None  # tests: a smaller sample
        self._then: list[Callable] = []

    def start(self, then: Callable | None = None) -> bool:
        """Start a survey of the current plan (or join the running one); False if no model is open."""
        if self.controller.project is None:
            return False
        if then is not None:
            self._then.append(then)
        return super().start()

    def _job(self, project):
        from studio.core.quant_error.survey import DEFAULT_MAX_ELEMENTS, SurveyCancelled, survey

        self.controller.flush()  # survey the plan of the policy on screen, not a throttled older one
        fn = functools.partial(survey, project, max_elements_per_unit=self.max_elements or DEFAULT_MAX_ELEMENTS)
        return fn, (SurveyCancelled,)

    def _store(self, project, survey) -> None:
        if self.controller.project is project:  # not a model closed meanwhile
            self.controller.set_errors(survey.error_map(), survey)

    def _succeeded(self, result) -> None:
        then, self._then = self._then, []
        super()._succeeded(result)
        for callback in then:
            callback(result)

    def _stopped(self, reason: str) -> None:
        self._then = []
        super()._stopped(reason)

