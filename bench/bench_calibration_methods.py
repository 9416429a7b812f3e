"""Benchmark: calibration methods at the same bytes -- plain, gptq, learned (block-wise), and mlx-lm's own.

One run, one model, one bit width: each method converts the model in a subprocess
of its own (peak RSS from ru_maxrss, wall time), then every output is compared
with the float source on held-out text (studio/resources/eval_sample.txt, never
calibrated on): mean KL(float || quantized) per token, and the top-1 agreement.
The studio's methods use a uniform policy (every matrix, the embedding and the
head at --bits, group 64; MoE routers at 8 bits, as mlx-lm does), so all three
write the same bytes. mlx-lm's gptq / awq / dwq and plain `mlx_lm.convert` run
through bench/peers_mlx_lm.py where it exists (the "models" helper's script),
each at the same bits and group size; a peer that fails on this model is listed
with its error. Last line: the learned method's KL and peak RSS as ratios to
the best peer's.

    python bench/bench_calibration_methods.py --model /work/wt/_models/dense --bits 3 \
        [--steps 200] [--sequences 32] [--length 256] [--eval-tokens 4096] [--no-peers]
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

RUN = r"""
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
model, policy, out, method, steps, sequences, length, cache = sys.argv[2:10]
from studio.core.project import Project
from studio.core.convert import convert
start = time.monotonic()
project = Project.open(model, policy)
quantizer, note = None, ""
if method == "gptq":
    from studio.core.calibration.calibrate import calibrate
    from studio.core.calibration.convert_hook import CalibratedQuantizer
    quantizer = CalibratedQuantizer(calibrate(project, sensitivity=False, sequences=int(sequences),
                                              length=int(length), use_cache=False))
elif method == "learned":
    from studio.core.calibration.convert_hook import LearnedQuantizer
    from studio.core.calibration.learned import learn
    from studio.core.calibration.learned_layer import LearnSettings
    result = learn(project, settings=LearnSettings(steps=int(steps)), sequences=int(sequences), length=int(length),
                   use_cache=False, cache_dir=Path(cache))
    quantizer = LearnedQuantizer(result)
    start_err = sum(r.start_error for r in result.layers)
    note = f"layer error {100 * (sum(r.error for r in result.layers) / start_err - 1):+.1f}% vs its GPTQ start"
r = convert(project, out, measure_errors=False, quantizer=quantizer, force=True)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rss = rss if sys.platform == "darwin" else rss * 1024
print(json.dumps({"wall_s": time.monotonic() - start, "peak_rss": rss, "bytes": r.bytes_written, "note": note}))
"""

KL = r"""
import json, sys
import mlx.core as mx
import numpy as np
from mlx_lm.utils import load
source, eval_text, tokens, window, *outs = sys.argv[1:]
model, tokenizer = load(source)
model.set_dtype(mx.float32)  # gather_mm runs in float32 only on a CPU
ids = tokenizer.encode(open(eval_text, encoding="utf-8").read())[: int(tokens)]
window = int(window)
windows = [mx.array(ids[a:a + window])[None] for a in range(0, len(ids) - window + 1, window)]
ref = []
for w in windows:
    logp = model(w).astype(mx.float32)
    logp = logp - mx.logsumexp(logp, axis=-1, keepdims=True)
    mx.eval(logp)
    ref.append(logp)
del model
rows = {}
for out in outs:
    q, _ = load(out)
    q.set_dtype(mx.float32)
    kl, agree, count = 0.0, 0, 0
    for w, p in zip(windows, ref):
        lq = q(w).astype(mx.float32)
        lq = lq - mx.logsumexp(lq, axis=-1, keepdims=True)
        k = mx.sum(mx.exp(p) * (p - lq), axis=-1)
        a = mx.sum(mx.argmax(p, axis=-1) == mx.argmax(lq, axis=-1))
        mx.eval(k, a)
        kl += float(mx.sum(k).item()); agree += int(a.item()); count += k.size
    rows[out] = {"kl": kl / count, "top1": agree / count, "tokens": count}
    del q
print(json.dumps(rows))
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
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1][:160]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))


def peers(model: Path, bits: int, work: Path, args) -> dict[str, dict]:
    """mlx-lm's own methods through bench/peers_mlx_lm.py, when it is there."""
    try:
        sys.path.insert(0, str(ROOT / "bench"))
        import peers_mlx_lm  # noqa: F401  (the "models" helper's script)
    except ImportError:
        print("note: bench/peers_mlx_lm.py is not here yet; the mlx-lm peers are left out")
        return {}
    return peers_mlx_lm.run_peers(model, bits=bits, group_size=64, work=work / "peers")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("/work/wt/_models/dense"))
    parser.add_argument("--bits", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--sequences", type=int, default=32)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--eval-tokens", type=int, default=4096)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--work", type=Path, default=Path("/tmp/configi-bench-methods"))
    parser.add_argument("--methods", nargs="+", default=["plain", "gptq", "learned"])
    parser.add_argument("--no-peers", action="store_true")
    args = parser.parse_args()

    work = args.work / args.model.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    policy = uniform_policy(args.bits, work / "policy.json")
    rows: dict[str, dict] = {}
    for method in args.methods:
        out = work / method
        print(f"converting: {method} ...", flush=True)
        rows[method] = {"out": out, **run(RUN, str(args.model), str(policy), str(out), method, str(args.steps),
                                          str(args.sequences), str(args.length), str(work / "cache"))}
    peer_rows = {} if args.no_peers else peers(args.model, args.bits, work, args)
    rows.update({f"mlx-lm {name}": row for name, row in peer_rows.items()})
    done = {name: row for name, row in rows.items() if "error" not in row}
    print("measuring KL on held-out text ...", flush=True)
    kl = run(KL, str(args.model), str(ROOT / "studio" / "resources" / "eval_sample.txt"), str(args.eval_tokens),
             str(args.window), *[str(row["out"]) for row in done.values()])
    if "error" in kl:
        raise SystemExit(f"KL measurement failed: {kl['error']}")
    kl = {k: v for k, v in kl.items() if k != str(ROOT)}

    print(f"\n{args.model} at {args.bits} bits, group 64; calibration {args.sequences}x{args.length} tokens of the "
          f"bundled corpus; learned {args.steps} steps a layer; KL on {args.eval_tokens} held-out tokens")
    print(f"{'method':<18}{'bytes':>12}{'KL mean':>11}{'top-1':>8}{'peak RSS MB':>13}{'wall s':>9}  note")
    for name, row in rows.items():
        if "error" in row:
            print(f"{name:<18}{'failed: ' + row['error']}")
            continue
        m = kl.get(str(row["out"]), {})
        size = row.get("bytes") or folder_bytes(row["out"])
        print(f"{name:<18}{size:>12,}{m.get('kl', float('nan')):>11.5f}{m.get('top1', float('nan')):>8.3f}"
              f"{row['peak_rss'] / 1e6:>13.0f}{row['wall_s']:>9.1f}  {row.get('note', '')}")
    peer_kls = {n: kl[str(r["out"])]["kl"] for n, r in done.items() if n.startswith("mlx-lm") and str(r["out"]) in kl
                and not n.endswith("plain")}
    if "learned" in done and peer_kls:
        best = min(peer_kls, key=peer_kls.get)
        mine = kl[str(done["learned"]["out"])]["kl"]
        print(f"learned / best peer ({best}): KL {mine / peer_kls[best]:.3f}x, peak RSS "
              f"{done['learned']['peak_rss'] / done[best]['peak_rss']:.3f}x")


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"bench took {time.monotonic() - started:.0f} s")
