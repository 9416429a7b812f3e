"""Evaluate an output and record the result in its model card: the one function the CLI and the window call."""

from __future__ import annotations

import os
from dataclasses import dataclass

from studio.core.evaluate.result import EvalResult


@dataclass
class RecordedEvaluation:
    result: EvalResult
    # True: README.md and evaluation.json hold the result; False: the folder is not a studio output
    # (no configi_policy.json) and was left alone; a sentence: recording failed, and why.
    recorded: bool | str


def evaluate_and_record(output, reference, **options) -> RecordedEvaluation:
    """``studio.core.evaluate.run.evaluate(output, reference, **options)``, then the output folder's
    model card and ``evaluation.json`` updated with the result (only for a folder the studio made)."""
    from studio.core.evaluate.run import evaluate
    from studio.core.card.model_card import record_evaluation

    result = evaluate(output, reference, **options)
    recorded: bool | str = False
    if isinstance(output, (str, os.PathLike)):
        try:
            recorded = record_evaluation(output, result)
        except OSError as exc:
            recorded = f"the model card could not be updated ({exc.strerror or exc})."
    return RecordedEvaluation(result, recorded)
