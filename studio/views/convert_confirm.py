"""Before a long conversion starts: say how big and how long, and ask.

A stray Space on a focused Convert button must not start a multi-hour job
unseen. The time is the source's bytes over the read rate this machine's last
conversion reached (remembered in the settings), or over a typical rate, named
as such, before the first one. Jobs shorter than `CONFIRM_AFTER_S` start at once.
"""

from __future__ import annotations

from studio import settings
from studio.core.formatting import human_bytes

CONFIRM_AFTER_S = 60
TYPICAL_RATE = 150e6  # bytes of source a second: a CPU conversion with error measurement, roughly


def duration(seconds) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "—"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m {seconds % 60:02d}s"


def expected_seconds(project) -> tuple[float, str]:
    """(seconds, how the rate was found) for converting `project` on this machine."""
    rate = settings.get(settings.CONVERT_RATE)
    if rate > 0:
        return project.estimate.source_bytes / rate, f"at the {human_bytes(rate)}/s of this machine's last conversion"
    return project.estimate.source_bytes / TYPICAL_RATE, (f"at a typical {human_bytes(TYPICAL_RATE)}/s "
                                                          "(this machine has not converted anything yet)")


def question(project, out: str) -> str | None:
    """The sentence to confirm, or None when the job is short enough to just start."""
    seconds, how = expected_seconds(project)
    if seconds < CONFIRM_AFTER_S:
        return None
    estimate = project.estimate
    return (f"Convert {project.inventory.root.name} under {project.policy.name} to {out}?\n\n"
            f"It writes {human_bytes(estimate.total_bytes)} ({estimate.bpw_quantized:.3f} bits per quantized "
            f"weight) from {human_bytes(estimate.source_bytes)} of source, in about {duration(seconds)} {how}.")


def remember_rate(project, seconds: float) -> None:
    """Keep the read rate a finished conversion reached, for the next estimate."""
    if seconds > 1:
        settings.put(settings.CONVERT_RATE, project.estimate.source_bytes / seconds)
