"""The calibration pass from the command line: a progress line with ETA, Ctrl-C cancels (shared by convert and fit)."""

from __future__ import annotations

import signal
import sys


def add_arguments(parser, flag: str, what: str) -> None:
    parser.add_argument(flag, nargs="?", const="", default=None, metavar="FILE",
                        help=f"{what}: run calibration text through the source model, one decoder layer at a time "
                             "(the bundled mixed corpus, or FILE); cached, so a second run is instant")


def run_calibration(project, text: str, sensitivity: bool, progress=None):
    """CalibrationStats for `project`, or None when the user pressed Ctrl-C. `progress` takes the
    pass's progress instead of the line printed here (convert shows one line over both steps)."""
    from studio.core.calibration.calibrate import calibrate

    stats = _with_progress(lambda **kw: calibrate(project, text or None, sensitivity=sensitivity, **kw), progress)
    if stats is None:
        return None
    thin, experts = stats.thin_experts()
    print(f"calibration: {stats.tokens:,} tokens of {stats.corpus_label} ({stats.seconds:.1f} s)"
          + (f"; {thin} of {experts} experts saw too few tokens and use their projection's mean" if thin else ""),
          file=sys.stderr)
    _warn_if_few_tokens(stats)
    return stats


def run_learning(project, text: str, progress=None):
    """The learned method's LearnedResult for `project` (block-wise, streamed), or None on Ctrl-C."""
    from studio.core.calibration.learned import learn

    result = _with_progress(lambda **kw: learn(project, text or None, **kw), progress)
    if result is None:
        return None
    layers = result.layers
    start = sum(r.start_error for r in layers) / max(len(layers), 1)
    error = sum(r.error for r in layers) / max(len(layers), 1)
    change = f" ({100 * (error / start - 1):+.1f}%)" if start > 0 else ""
    held_out = result.store.meta.get("held_out", True)
    measured = "held-out tokens" if held_out else "the tokens it trained on (too few to hold any out)"
    print(f"learned calibration: {len(layers)} layers in {result.seconds:.1f} s; mean relative error of the "
          f"layer outputs on {measured} {start:.3g} at the GPTQ start, {error:.3g} learned{change}",
          file=sys.stderr)
    _warn_if_few_tokens(result.stats)
    return result


def _warn_if_few_tokens(stats) -> None:
    from studio.core.calibration.corpus import few_tokens_warning

    warning = few_tokens_warning(stats.tokens, stats.corpus_label)
    if warning is not None:
        print(f"warning: {warning}", file=sys.stderr)


def _with_progress(run, shown=None):
    """`run(progress=, cancel=)` with a progress line on a terminal (or `shown`, given each progress
    instead) and Ctrl-C as cancel; None when cancelled."""
    from studio.core.calibration.calibrate import CalibrationCancelled
    from studio.core.cancel import CancelToken

    cancel = CancelToken()
    interactive = sys.stderr.isatty() and shown is None

    def progress(p):
        if shown is not None:
            shown(p)
        elif interactive:
            eta = "--:--" if p.eta_s is None else f"{int(p.eta_s) // 60:02d}:{int(p.eta_s) % 60:02d}"
            sys.stderr.write(f"\rcalibrating {100 * p.fraction:5.1f}%  ETA {eta}  {p.label:<28}")
            sys.stderr.flush()

    def on_interrupt(signum, frame):
        cancel.cancel()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        return run(progress=progress, cancel=cancel)
    except CalibrationCancelled as exc:
        print(f"\nconfigi-studio: {exc}", file=sys.stderr)
        return None
    finally:
        signal.signal(signal.SIGINT, previous)
        if interactive:
            sys.stderr.write("\n")
