"""Benchmark: calibration methods at the same bytes -- plain, gptq, learned (block-wise), and mlx-lm's own.

One run, one model, one bit width: each method converts the model in a subprocess
of its own (peak RSS from ru_maxrss, wall time), then every output is compared
with the float source on held-out text (studio/resources/eval_sample.txt, never
calibrated on) by the studio's own evaluation, as peers_mlx_lm.py scores its rows:
mean KL per token, top-1 agreement, perplexity. (mlx-lm's GPTQ takes 2, 4 or 8 bits.)
The studio's methods use a uniform policy (every matrix, the embedding and the
head at --bits, group 64; MoE routers at 8 bits, as mlx-lm does), so all three
write the same bytes. mlx-lm's gptq / awq / dwq and plain `mlx_lm.convert` run
through bench/peers_mlx_lm.py where it exists (the "models" helper's script),
each at the same bits and group size; a peer that fails on this model is listed
with its error. Last line: the learned method's KL and peak RSS as ratios to
the best peer's.

    python bench/bench_calibration_methods.py --model /work/wt/_models/dense --bits 4 \
        [--steps 200] [--sequences 32] [--length 256] [--eval-tokens 4096] [--no-peers]
        [--peer-methods convert gptq] [--methods plain gptq learned learned-wide]

--policy config-i (a bundled preset's name, or a policy file) measures the
methods under that policy instead of uniform --bits: Config-I's 2-bit expert
gate/up and 3-bit down are where calibration matters most. mlx-lm's peers
cannot write those bytes, so they are left out.

`learned-wide` is the learned method with the rounding of every unit over 1 Mi
values left at its start (scales and biases learned only), which is what
full-width MiniMax-M3 experts get: on a small MoE it measures what that costs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# `--methods learned-wide`: the learned method as it runs on full-width MiniMax-M3 experts (over
# learned_layer.ROUNDING_MAX_VALUES a projection), where only the scales and biases are learned. On a
# small MoE the experts are lowered past the limit this way; attention keeps its learned rounding.
WIDE_ROUNDING_MAX_VALUES = 2**20

RUN = r"""
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
model, policy, out, method, steps, sequences, length, cache, tokens, context, wide = sys.argv[2:13]
WIDE_ROUNDING_MAX_VALUES = int(wide)
from studio.core.project import Project
from studio.core.convert import convert
from studio.core.evaluate.run import evaluate
start = time.monotonic()
project = Project.open(model, policy)
quantizer, note = None, ""
if method == "gptq":
    from studio.core.calibration.calibrate import calibrate
    from studio.core.calibration.convert_hook import CalibratedQuantizer
    quantizer = CalibratedQuantizer(calibrate(project, sensitivity=False, sequences=int(sequences),
                                              length=int(length), use_cache=False))
elif method in ("learned", "learned-wide"):
    from studio.core.calibration import learned_layer
    from studio.core.calibration.convert_hook import LearnedQuantizer
    from studio.core.calibration.learned import learn
    from studio.core.calibration.learned_layer import LearnSettings
    if method == "learned-wide":  # every unit over 1 Mi values keeps its start's rounding, as M3's experts do
        learned_layer.ROUNDING_MAX_VALUES = WIDE_ROUNDING_MAX_VALUES
    result = learn(project, settings=LearnSettings(steps=int(steps)), sequences=int(sequences), length=int(length),
                   use_cache=False, cache_dir=Path(cache))
    quantizer = LearnedQuantizer(result)
    start_err = sum(r.start_error for r in result.layers)
    note = f"layer error {100 * (sum(r.error for r in result.layers) / start_err - 1):+.1f}% vs its GPTQ start"
r = convert(project, out, measure_errors=False, quantizer=quantizer, force=True)
wall = time.monotonic() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rss = rss if sys.platform == "darwin" else rss * 1024
e = evaluate(out, model, max_tokens=int(tokens), context=int(context), mode="together")  # as peers_mlx_lm.py
print(json.dumps({"wall_s": wall, "peak_rss_mb": rss / 1e6, "bytes": r.bytes_written, "note": note,
                  "kld_mean": e.kld_mean, "top1": e.top1_agreement, "ppl": e.ppl, "ppl_reference": e.ppl_reference}))
"""


def uniform_policy(bits: int, path: Path) -> Path:
    """The bundled uniform 4-bit preset at `bits` (routers stay at 8, as mlx-lm keeps them)."""
    policy = json.loads((ROOT / "studio" / "resources" / "presets" / "uniform-4bit.json").read_text())
    policy["name"] = f"Uniform {bits}-bit"
    for rule in policy["rules"]:
        q = rule["action"].get("quantize") if isinstance(rule["action"], dict) else None
        if q and q["bits"] == 4:
            q["bits"] = bits
    path.write_text(json.dumps(policy, indent=1))
    return path


def run(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, str(ROOT), *args], capture_output=True, text=True)
    if out.returncode != 0:
        return {"status": "error", "note": (out.stderr.strip().splitlines() or ["failed"])[-1][:160]}
    return {"status": "ok", **json.loads(out.stdout.strip().splitlines()[-1])}


def peers(model: Path, bits: int, work: Path, args) -> dict[str, dict]:
    """mlx-lm's own methods through bench/peers_mlx_lm.py (the "models" helper's script), when it is there."""
    try:
        sys.path.insert(0, str(args.peers_dir))
        from peers_mlx_lm import run_peers
    except ImportError:
        print("note: bench/peers_mlx_lm.py is not here yet; the mlx-lm peers are left out")
        return {}
    chosen = {"methods": args.peer_methods} if args.peer_methods else {}
    rows = run_peers(model, bits, 64, out_dir=work / "peers", calib_sequences=args.sequences, **chosen,
                     calib_length=args.length, max_tokens=args.eval_tokens, context=args.context)
    return {f"mlx-lm {row['method']}": {**row, "wall_s": row.get("quantize_s")} for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("/work/wt/_models/dense"))
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--sequences", type=int, default=32)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--eval-tokens", type=int, default=4096)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--work", type=Path, default=Path("/tmp/configi-bench-methods"))
    parser.add_argument("--methods", nargs="+", default=["plain", "gptq", "learned"])
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--policy", help="a bundled preset's name or a policy file, instead of uniform --bits "
                                         "(no mlx-lm peers: they cannot write the same bytes)")
    parser.add_argument("--peer-methods", nargs="+", default=None,
                        help="mlx-lm methods to run (default: all of peers_mlx_lm.py's)")
    parser.add_argument("--peers-dir", type=Path, default=ROOT / "bench", help="where peers_mlx_lm.py is")
    args = parser.parse_args()

    work = args.work / args.model.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    policy = args.policy or uniform_policy(args.bits, work / "policy.json")
    rows: dict[str, dict] = {}
    for method in args.methods:
        print(f"converting and evaluating: {method} ...", flush=True)
        rows[method] = run(RUN, str(args.model), str(policy), str(work / method), method, str(args.steps),
                           str(args.sequences), str(args.length), str(work / "cache"), str(args.eval_tokens),
                           str(args.context), str(WIDE_ROUNDING_MAX_VALUES))
    if not args.no_peers and not args.policy:
        rows.update(peers(args.model, args.bits, work, args))

    shape = f"policy {args.policy}" if args.policy else f"{args.bits} bits, group 64"
    print(f"\n{args.model} at {shape}; calibration {args.sequences}x{args.length} tokens of the "
          f"bundled corpus; learned {args.steps} steps a layer; KL on {args.eval_tokens} held-out tokens "
          f"(studio evaluate, context {args.context})")
    print(f"{'method':<16}{'bytes':>12}{'KL mean':>10}{'top-1':>8}{'ppl':>12}{'peak RSS MB':>13}{'wall s':>9}  note")
    for name, row in rows.items():
        if row.get("status") != "ok":
            print(f"{name:<16}{row.get('status', 'error')}: {row.get('note', '')}")
            continue
        print(f"{name:<16}{row['bytes']:>12,}{row['kld_mean']:>10.5f}{row['top1']:>8.3f}{row['ppl']:>12.5g}"
              f"{row['peak_rss_mb']:>13.0f}{row.get('wall_s') or 0:>9.1f}  {row.get('note') or ''}")
    ok = {n: r for n, r in rows.items() if r.get("status") == "ok"}
    best_peer = min((n for n in ok if n.startswith("mlx-lm") and not n.endswith("convert")),
                    key=lambda n: ok[n]["kld_mean"], default=None)
    if "learned" in ok and best_peer:
        mine, peer = ok["learned"], ok[best_peer]
        print(f"learned / best mlx-lm peer ({best_peer}): KL {mine['kld_mean'] / peer['kld_mean']:.3f}x, "
              f"peak RSS {mine['peak_rss_mb'] / peer['peak_rss_mb']:.3f}x, bytes {mine['bytes'] / peer['bytes']:.4f}x")


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"bench took {time.monotonic() - started:.0f} s")
