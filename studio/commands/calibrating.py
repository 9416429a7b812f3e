"""The calibration pass from the command line: a progress line with ETA, Ctrl-C cancels (shared by convert and fit)."""

from __future__ import annotations

import signal
import sys


def add_arguments(parser, flag: str, what: str) -> None:
    parser.add_argument(flag, nargs="?", const="", default=None, metavar="FILE",
                        help=f"{what}: run calibration text through the source model, one decoder layer at a time "
                             "(the bundled mixed corpus, or FILE); cached, so a second run is instant")


def run_calibration(project, text: str, sensitivity: bool):
    """CalibrationStats for `project`, or None when the user pressed Ctrl-C."""
    from studio.core.calibration.calibrate import CalibrationCancelled, calibrate
    from studio.core.cancel import CancelToken

    cancel = CancelToken()
    interactive = sys.stderr.isatty()

    def progress(p):
        if interactive:
            eta = "--:--" if p.eta_s is None else f"{int(p.eta_s) // 60:02d}:{int(p.eta_s) % 60:02d}"
            sys.stderr.write(f"\rcalibrating {100 * p.fraction:5.1f}%  ETA {eta}  {p.label:<20}")
            sys.stderr.flush()

    def on_interrupt(signum, frame):
        cancel.cancel()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        stats = calibrate(project, text or None, sensitivity=sensitivity, progress=progress, cancel=cancel)
    except CalibrationCancelled as exc:
        print(f"\nconfigi-studio: {exc}", file=sys.stderr)
        return None
    finally:
        signal.signal(signal.SIGINT, previous)
        if interactive:
            sys.stderr.write("\n")
    thin, experts = stats.thin_experts()
    print(f"calibration: {stats.tokens:,} tokens of {stats.corpus_label} ({stats.seconds:.1f} s)"
          + (f"; {thin} of {experts} experts saw too few tokens and use their projection's mean" if thin else ""),
          file=sys.stderr)
    return stats
