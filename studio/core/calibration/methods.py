"""The calibration methods by name: "gptq" (today's per-matrix statistics, GPTQ where they fit) and
"learned" (block-wise, learned.py), each as the converter's quantizer.

    make_quantizer(project, method, text=None, progress=, cancel=) -> CalibratedQuantizer | LearnedQuantizer
    calibrate_and_convert(project, out, method=..., ...)  the window's calibrated conversion
"""

from __future__ import annotations

from studio.core.calibration.convert_hook import CalibratedQuantizer, LearnedQuantizer
from studio.core.errors import StudioError

METHODS = ("gptq", "learned")
DEFAULT_METHOD = "gptq"


def check_method(method: str) -> str:
    """`method` if it is one this build knows; otherwise a StudioError in one sentence."""
    if method not in METHODS:
        raise StudioError(f"unknown calibration method {method!r}: use " + " or ".join(METHODS) + ".")
    return method


def calibrate_and_convert(project, out, *, text=None, progress=None, cancel=None, method: str = DEFAULT_METHOD,
                          expected=None, **kwargs):
    """The window's calibrated conversion: the calibration pass (cached) of `method` ("gptq" or
    "learned"), then `convert` with its quantizer. Progress covers both steps
    (`timing.PhasedProgress`): the pass's arrives as convert `Progress` with phase "calibrating";
    every one carries the step's name and the bar and ETA over both. `expected` is the
    `timing.ConversionTime` the caller told the user (else one is made)."""
    import time

    from studio.core.calibration.timing import PhasedProgress, conversion_time, remember_pass
    from studio.core.convert import convert, preflight

    method = check_method(method)
    preflight(project, out, kwargs.get("force", False))  # before the pass, not after it
    phased = PhasedProgress(progress, expected or conversion_time(project, calibrate=True, text=text, method=method))
    started = time.monotonic()
    quantizer = make_quantizer(project, method, text, progress=phased.calibrating, cancel=cancel)
    remember_pass(project, text, time.monotonic() - started if phased.measured else None, method)
    return convert(project, out, progress=phased.converting, cancel=cancel, quantizer=quantizer, **kwargs)


def make_quantizer(project, method: str, text=None, **kwargs):
    """The calibration pass of `method` (cached), as the converter's quantizer."""
    if check_method(method) == "learned":
        from studio.core.calibration.learned import learn

        return LearnedQuantizer(learn(project, text, **kwargs))
    from studio.core.calibration.calibrate import calibrate

    return CalibratedQuantizer(calibrate(project, text, sensitivity=False, **kwargs))
