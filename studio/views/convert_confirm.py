"""Before a long conversion starts: say how big and how long, and ask.

A stray Space on a focused Convert button must not start a multi-hour job
unseen. The time comes from `studio.core.calibration.timing.conversion_time`:
the source's bytes over the read rate this machine's last conversion reached
(remembered in the settings), or over a typical rate, named as such, before the
first one; with Calibrate on, plus the calibration pass's modelled cost (nothing
when the pass is cached). Jobs shorter than `CONFIRM_AFTER_S` start at once.
"""

from __future__ import annotations

from studio import settings
from studio.core.calibration.timing import TYPICAL_CONVERT_RATE, ConversionTime, conversion_time
from studio.core.formatting import human_bytes

CONFIRM_AFTER_S = 60
TYPICAL_RATE = TYPICAL_CONVERT_RATE  # bytes of source a second: a CPU conversion with error measurement, roughly


def duration(seconds) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "—"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m {seconds % 60:02d}s"


def expected(project, calibrate: bool = False, method: str = "gptq") -> ConversionTime:
    """Expected seconds of each step of converting `project` on this machine, and how each was found."""
    return conversion_time(project, calibrate=calibrate, method=method, convert_rate=settings.get(settings.CONVERT_RATE))


def expected_seconds(project) -> tuple[float, str]:
    """(seconds, how the rate was found) for a plain conversion of `project` on this machine."""
    time = expected(project)
    return time.converting_s, time.converting_how


def time_sentence(time: ConversionTime) -> str:
    """"about 2m 27s at …", or, with calibration, both steps and their sum."""
    if time.steps == 1:
        return f"about {duration(time.converting_s)} {time.converting_how}"
    if time.calibrating_s == 0:
        return f"about {duration(time.converting_s)} {time.converting_how}; {time.calibrating_how}"
    return (f"about {duration(time.total_s)}: calibrating about {duration(time.calibrating_s)} "
            f"{time.calibrating_how}, then converting about {duration(time.converting_s)} "
            f"{time.converting_how}")


def question(project, out: str, calibrate: bool = False, method: str = "gptq") -> str | None:
    """The sentence to confirm, or None when the job is short enough to just start."""
    time = expected(project, calibrate, method)
    if time.total_s < CONFIRM_AFTER_S:
        return None
    estimate = project.estimate
    return (f"Convert {project.inventory.root.name} under {project.policy.name} to {out}?\n\n"
            f"It writes {human_bytes(estimate.total_bytes)} ({estimate.bpw_quantized:.3f} bits per quantized "
            f"weight) from {human_bytes(estimate.source_bytes)} of source, in {time_sentence(time)}.")


def remember_rate(project, seconds: float) -> None:
    """Keep the read rate a finished conversion reached, for the next estimate."""
    if seconds > 1:
        settings.put(settings.CONVERT_RATE, project.estimate.source_bytes / seconds)
