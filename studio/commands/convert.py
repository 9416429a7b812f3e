"""`configi-studio convert MODEL OUT [--policy ...] [--force] [--calibrate [FILE]] [--calibrate-method gptq|learned]`:
write an MLX folder, with a progress line."""

from __future__ import annotations

import math
import signal
import sys
import time

from studio.commands.calibrating import add_arguments as add_calibration_arguments
from studio.commands.calibrating import run_calibration, run_learning
from studio.core.errors import StudioError
from studio.core.formatting import human_bytes


def configure_parser(parser):
    parser.add_argument("model", help="source model: a folder (Hugging Face style or MLX) or a Hub repo org/name[@revision]")
    parser.add_argument("out", help="output folder; it must not exist unless --force is given")
    parser.add_argument("--policy", default=None, help="preset name (default config-i) or policy JSON file")
    parser.add_argument("--force", action="store_true", help="replace an existing output folder once the new one is complete")
    parser.add_argument("--shard-gb", type=float, default=5.0, help="largest output shard in GB (default 5)")
    parser.add_argument("--keep-source", action="store_true",
                        help="for a Hub repo: first download its weights into the huggingface_hub cache, so this "
                             "and later conversions of the same revision read from disk")
    parser.add_argument("--no-errors", action="store_true",
                        help="skip measuring each tensor's quantization error (quant_errors.json); "
                             "measuring dequantizes every chunk again, which costs time, most on CPU")
    add_calibration_arguments(parser, "--calibrate", "choose each group's scales and biases for the output "
                              "(same tensors and bytes as without)")
    parser.add_argument("--calibrate-method", default=None, metavar="METHOD",
                        help="how --calibrate chooses the values: gptq (default; per-matrix statistics, GPTQ where "
                             "they fit) or learned (block-wise, AutoRound-style: each decoder layer's rounding, scales "
                             "and biases tuned with MLX autograd against the float layer's output; slower). Implies "
                             "--calibrate")


def _format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class ProgressLine:
    """Progress on stderr: phase, percent, MB/s, ETA, unit. On a terminal one line rewritten in
    place; into a file or a pipe (a log) plain lines, one each `LOG_STEP` percent or phase change,
    since "\r" rewrites pile up there (24 KB for a one-second run)."""

    LOG_STEP = 5.0  # percent between two log lines

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.width = 0
        self.terminal = self.stream.isatty()
        self._logged: tuple[str, float] | None = None  # (phase, percent) of the last log line

    def __call__(self, p) -> None:
        percent = 100 * p.overall_fraction
        speed = "" if p.phase == "calibrating" else f"  {p.bytes_per_s / 1e6:7.1f} MB/s"
        # A calibrated conversion: the step, the bar over both steps, the ETA of all that is left.
        head = f"{p.stage:<26}" if p.stage else f"{p.phase:<9}"
        text = (f"{head} {percent:5.1f}%{speed}  ETA {_format_eta(p.overall_eta_s)}  "
                f"[{p.units_done}/{p.units_total}] {p.unit}")
        text = text[:150]
        if not self.terminal:
            last = self._logged
            if last is None or last[0] != (p.stage or p.phase) or percent >= last[1] + self.LOG_STEP or percent >= 100 > last[1]:
                self._logged = (p.stage or p.phase, percent)
                self.stream.write(text.rstrip() + "\n")
                self.stream.flush()
            return
        pad = max(0, self.width - len(text))
        self.width = len(text)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()

    def end(self) -> None:
        if self.width:
            self.stream.write("\n")
            self.stream.flush()
            self.width = 0


def _steps_sentence(expected) -> str:
    """The two steps' expected times, as the window's question words them."""
    convert = f"converting about {_format_eta(expected.converting_s)} {expected.converting_how}"
    if expected.calibrating_s == 0:
        return f"calibration cached; {convert}"
    return (f"about {_format_eta(expected.total_s)} in all: calibrating about {_format_eta(expected.calibrating_s)} "
            f"{expected.calibrating_how}, then {convert}")


def _keep_source(project) -> None:
    from studio.core.hub.source import HubSource, keep_local_copy

    source = project.inventory.source
    if not isinstance(source, HubSource):
        print("note: --keep-source applies to Hub repos; this source is already on disk.", file=sys.stderr)
        return

    def show(name: str, done: int, total: int) -> None:
        print(f"\rkeeping a local copy: {human_bytes(done)} of {human_bytes(total)} {name}".ljust(100)[:100],
              end="", file=sys.stderr, flush=True)

    fetched = keep_local_copy(source, show)
    print(f"\nkept {human_bytes(fetched)} of weights in the huggingface_hub cache ({source.root})", file=sys.stderr)


def run(args) -> int:
    from studio.core.calibration.methods import DEFAULT_METHOD, check_method
    from studio.core.convert import CancelToken, ConversionCancelled, convert
    from studio.core.project import Project

    method = check_method(args.calibrate_method or DEFAULT_METHOD)  # a bad name fails before any work
    if not (math.isfinite(args.shard_gb) and args.shard_gb > 0):
        raise StudioError("--shard-gb must be a number of GB above 0.")
    if args.calibrate_method is not None and args.calibrate is None:
        args.calibrate = ""  # a method asks for calibration, with the bundled corpus
    project = Project.open(args.model, args.policy)
    est = project.estimate
    print(f"{project.inventory.source.label} -> {args.out}  (policy {project.policy.name}, "
          f"{human_bytes(est.total_bytes)}, {est.bpw_quantized:.3f} bpw over quantized weights)", file=sys.stderr)
    for warning in project.warnings:
        print(f"warning: {warning}", file=sys.stderr)

    if args.keep_source:
        _keep_source(project)
    quantizer = None
    line = ProgressLine()
    progress = line
    if args.calibrate is not None:
        from studio.core.calibration.convert_hook import CalibratedQuantizer, LearnedQuantizer
        from studio.core.calibration.corpus import read_corpus_text
        from studio.core.calibration.timing import PhasedProgress, conversion_time, remember_pass
        from studio.core.convert import preflight

        text = args.calibrate or None
        # What would stop the run fails now, not after a pass that takes hours on a big MoE.
        read_corpus_text(text)
        preflight(project, args.out, args.force)
        expected = conversion_time(project, calibrate=True, text=text, method=method)
        print(f"expected: {_steps_sentence(expected)}", file=sys.stderr)
        phased = PhasedProgress(line, expected)  # one line over both steps, the ETA over both
        started = time.monotonic()
        if method == "learned":
            learned = run_learning(project, args.calibrate, progress=phased.calibrating)
            quantizer = None if learned is None else LearnedQuantizer(learned)
        else:
            stats = run_calibration(project, args.calibrate, sensitivity=False, progress=phased.calibrating)
            quantizer = None if stats is None else CalibratedQuantizer(stats)
        line.end()
        if quantizer is None:
            return 130
        remember_pass(project, text, time.monotonic() - started if phased.measured else None, method)
        progress = phased.converting
    cancel = CancelToken()

    def on_interrupt(signum, frame):
        cancel.cancel()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once

    previous = signal.signal(signal.SIGINT, on_interrupt)
    started = time.monotonic()
    try:
        result = convert(project, args.out, force=args.force, progress=progress, cancel=cancel,
                         max_shard_bytes=int(args.shard_gb * 1e9), measure_errors=not args.no_errors, quantizer=quantizer)
    except ConversionCancelled as exc:
        line.end()
        print(f"configi-studio: {exc}", file=sys.stderr)
        return 130
    finally:
        line.end()
        signal.signal(signal.SIGINT, previous)
    for notice in result.notices:
        print(f"note: {notice}", file=sys.stderr)
    expert_lines = getattr(quantizer, "expert_lines", None)  # the GPTQ quantizer's per-layer expert methods
    for line in expert_lines() if expert_lines is not None else ():
        print(f"calibration: {line}", file=sys.stderr)
    seconds = time.monotonic() - started
    speed = f"{result.bytes_written / max(seconds, 1e-9) / 1e6:.1f} MB/s"
    detail = f"{result.resumed_shards} shard(s) resumed" if result.resumed_shards else speed
    method_note = f", calibrated ({result.calibration})" if result.calibration else ""
    print(f"wrote {result.path}: {human_bytes(result.bytes_written)} of tensor data in {seconds:.1f} s "
          f"({detail}){method_note}")
    print(f"bpw, quantized weights {est.bpw_quantized:.3f}; bpw, whole output {est.bpw_output:.3f}")
    return 0
