"""Benchmark: peak memory of the streamed calibration pass (gptq, or the learned method) on full-width MiniMax-M3 slices.

Builds (once, cached under --work) MiniMax-M3 slices in the official MXFP8
format with full-width MoE layers (hidden 6144, 128 experts of 3072, top-4,
64 query heads, the sparse-attention indexer) and a tiny vocabulary: one
slice of 1 layer and one of 2 (7.3 GB of weights a layer). The weights are
random FP8 codes with random E8M0 scales, so every expert is real data read
from disk. Runs `calibrate` (statistics only; --sensitivity adds the
output-space measurement, which quantizes every cell at every bit width and
takes hours on a CPU) on each slice in its own process and prints peak RSS
against one layer's size in bf16 plus the hidden states of the calibration
tokens. Targets: peak RSS within that bound, and flat from 1 to 2 layers.

`--method learned` runs the block-wise learned pass instead (studio.core.calibration.learned:
the GPTQ start, then `--steps` optimizer steps a layer); it keeps three copies of the hidden
states (float stream, quantized stream, target), so its bound counts them three times.

--gptq N then quantizes, in the same process, the first N experts of every
routed projection of every layer the way a calibrated conversion does
(`stats.hessian` -> `gptq.quantize_experts`: each expert's own X^T X, or the
projection's pooled one at the expert's scales; at M3 width the pooled one,
151 MB a projection, which the pass spilled to disk), so the peak includes
expert GPTQ's matrices too: still flat in layers. The pooled X^T X is trusted
only from 4 routed rows per input channel (24,576 at width 6144, 6,144 tokens at
top-4), so --gptq raises --sequences to that; with fewer every expert is
clip-only and there is no GPTQ to measure (the bench's first version printed
0/0/0 for that reason).

Each run also prints the peak RSS reached by the end of each layer: a 2-layer
run whose second figure equals its first is flat in layers within one process.

    python bench/bench_calibrate.py [--work DIR] [--layers 1 2] [--sequences 8] [--length 256]
                                    [--method gptq|learned] [--steps 2] [--gptq 1]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from factory import MXFP8_CONFIG, st  # noqa: E402
from factory.tiny import m3_layout  # noqa: E402
from factory.tokenizer import write_tokenizer  # noqa: E402

from studio.core.calibration.expert_hessians import HESSIAN_TOKENS_PER_INPUT  # noqa: E402

HIDDEN, EXPERTS, TOP_K = 6144, 128, 4
# The slices' shape: MiniMax-M3's full-width layers, a tiny vocabulary and vision tower.
SLICE = dict(hidden=HIDDEN, dense_layers=0, experts=EXPERTS, top_k=TOP_K, heads=64, kv_heads=4, head_dim=128,
             inter=3072, dense_inter=12288, shared_inter=3072, index_heads=4, index_dim=128, index_block=128,
             vocab=512, max_pos=4096, vision_hidden=64, vision_inter=128, vision_layers=1, projector_hidden=128)

RUN = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from studio.core.project import Project
from studio.core.calibration.calibrate import calibrate
from studio.core.calibration.learned import learn
from studio.core.calibration.learned_layer import LearnSettings
def peak():
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024
# Peak RSS so far each time the pass starts a layer (and the head): the growth from one layer to
# the next, in one process, is what "flat in layers" means.
layer_peaks, current = [], [None]
def on_progress(p):
    name = p.label.split(":")[0]
    if name != current[0]:
        if current[0] is not None and current[0].startswith("layer "):
            layer_peaks.append(peak())
        current[0] = name
start = time.monotonic()
project = Project.open(sys.argv[2])
if sys.argv[6] == "learned":
    with tempfile.TemporaryDirectory() as cache:
        result = learn(project, settings=LearnSettings(steps=int(sys.argv[7]), batch=2, holdout=1),
                       sequences=int(sys.argv[4]), length=int(sys.argv[5]), use_cache=False, cache_dir=Path(cache),
                       progress=on_progress)
        stats = result.stats
else:
    stats = calibrate(project, sensitivity=sys.argv[3] == "1", sequences=int(sys.argv[4]),
                      length=int(sys.argv[5]), use_cache=False, progress=on_progress)
pass_rss, pass_s = peak(), time.monotonic() - start
methods, gptq_s = [0, 0, 0], 0.0
experts = int(sys.argv[8])
if experts:
    import mlx.core as mx
    from studio.core.calibration.gptq import quantize_experts
    from studio.core.model.unit_source import read_unit_rows, unit_values
    reader = project.inventory.source.reader()
    for unit in project.units:
        if unit.role not in ("expert_gate", "expert_up", "expert_down") or unit.kind != "module":
            continue
        hessians = stats.hessian(unit.path)
        if hessians is None:
            continue
        for i, n in enumerate(hessians.tally()):
            methods[i] += n
        w = unit_values(unit, read_unit_rows(reader, project.inventory, unit, 0, experts))
        q = quantize_experts(w, 64, 3 if unit.role == "expert_down" else 2, hessians[:experts], mx.bfloat16)
        mx.eval(*q)
        del w, q, hessians
    reader.close()
    gptq_s = time.monotonic() - start - pass_s
print(json.dumps({"wall_s": pass_s, "peak_rss": pass_rss, "tokens": stats.tokens, "thin": stats.thin_experts(),
                  "gptq_rss": peak(), "gptq_s": gptq_s, "methods": methods, "layer_peaks": layer_peaks}))
"""

BASELINE = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[1])
import mlx.core, mlx_lm.utils, studio.core.calibration.calibrate  # noqa
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_rss": rss if sys.platform == "darwin" else rss * 1024}))
"""


def build_slice(path: Path, layers: int) -> Path:
    if (path / "config.json").exists():
        return path
    tmp = path.with_name(path.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config, specs = m3_layout(layers=layers, **SLICE)
    rng = np.random.default_rng(0)
    pool = st.to_bf16_bits(0.02 * rng.standard_normal(1 << 22).astype(np.float32))
    codes = rng.integers(0, 256, size=1 << 26, dtype=np.uint8)
    codes[(codes & 0x7F) == 0x7F] -= 1  # no NaN codes
    tensors = {}
    for name, shape, kind in specs.items:
        if kind == "linear":
            tensors[name] = st.Tensor("F8_E4M3", shape)
            tensors[name + "_scale_inv"] = st.Tensor("U8", (*shape[:-1], shape[-1] // 32))
        else:
            tensors[name] = st.Tensor("F32" if kind == "f32" else "BF16", shape)
    head, _ = st.header_bytes(tensors)

    def tiled(f, source: np.ndarray, count: int) -> None:
        written = 0
        while written < count:  # random offsets into a random pool: fast, still varied
            start = int(rng.integers(0, len(source) // 2))
            piece = source[start:start + min(count - written, len(source) - start)]
            f.write(piece.tobytes())
            written += len(piece)

    with open(tmp / "model.safetensors", "wb") as f:
        f.write(head)
        for name, t in tensors.items():
            count = math.prod(t.shape)
            if t.dtype == "F8_E4M3":
                tiled(f, codes, count)
            elif t.dtype == "U8":  # E8M0 exponents near 2^-14: values of trained-weight size
                f.write(rng.integers(111, 116, size=count, dtype=np.uint8).tobytes())
            elif t.dtype == "F32":
                f.write((0.02 * rng.standard_normal(count)).astype("<f4").tobytes())
            else:
                tiled(f, pool, count)
    ids = write_tokenizer(tmp)
    config["torch_dtype"] = "bfloat16"
    config["text_config"]["eos_token_id"] = ids["<|im_end|>"]
    config["quantization_config"] = dict(MXFP8_CONFIG)
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tmp.rename(path)
    return path


def layer_elements() -> int:
    _, specs = m3_layout(layers=1, **SLICE)
    return sum(math.prod(shape) for name, shape, _ in specs.items if ".layers.0." in name)


def run(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, str(ROOT), *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/configi-bench-calibrate"))
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--sensitivity", action="store_true")
    parser.add_argument("--method", choices=("gptq", "learned"), default="gptq")
    parser.add_argument("--steps", type=int, default=2, help="learned: optimizer steps a layer")
    parser.add_argument("--gptq", type=int, default=0, metavar="N",
                        help="then GPTQ the first N experts of every routed projection, as convert would")
    args = parser.parse_args()

    need = HESSIAN_TOKENS_PER_INPUT * HIDDEN  # routed rows a gate/up projection's pooled X^T X needs
    if args.gptq and args.sequences * args.length * TOP_K < need:
        # Below this every expert is clip-only (expert_hessians.py) and there is no GPTQ to measure.
        args.sequences = -(-need // (args.length * TOP_K))
        print(f"--gptq: {args.sequences} sequences, so that the routed rows reach the {need:,} "
              f"a {HIDDEN}-wide pooled Hessian needs")
    layer_bf16 = layer_elements() * 2
    hidden = args.sequences * args.length * HIDDEN * 4
    bound = layer_bf16 + (3 if args.method == "learned" else 1) * hidden
    print(f"method {args.method}" + (f", {args.steps} steps a layer" if args.method == "learned" else ""))
    base = run(BASELINE)["peak_rss"]
    print(f"one layer in bf16 {layer_bf16 / 1e9:.2f} GB; hidden states of {args.sequences}x{args.length} tokens "
          f"{hidden / 1e6:.0f} MB; bound {bound / 1e9:.2f} GB; Python + MLX + mlx-lm alone {base / 1e6:.0f} MB")
    print(f"{'layers':>6}{'source GB':>11}{'wall s':>9}{'peak RSS GB':>13}{'of bound':>10}{'thin experts':>14}"
          + (f"{'+GPTQ s':>9}{'+GPTQ peak GB':>15}{'of bound':>10}  expert projections own/pooled/clip"
             if args.gptq else ""))
    peaks, gptq_peaks = [], []
    for layers in args.layers:
        source = build_slice(args.work / f"m3-mxfp8-{layers}L", layers)
        size = sum(f.stat().st_size for f in source.glob("*.safetensors"))
        r = run(RUN, str(source), "1" if args.sensitivity else "0", str(args.sequences), str(args.length),
                args.method, str(args.steps), str(args.gptq))
        peaks.append(r["peak_rss"])
        gptq_peaks.append(r["gptq_rss"])
        extra = (f"{r['gptq_s']:>9.1f}{r['gptq_rss'] / 1e9:>15.2f}{r['gptq_rss'] / bound:>10.2f}  "
                 f"{'/'.join(map(str, r['methods']))}" if args.gptq else "")
        print(f"{layers:>6}{size / 1e9:>11.2f}{r['wall_s']:>9.1f}{r['peak_rss'] / 1e9:>13.2f}"
              f"{r['peak_rss'] / bound:>10.2f}{'%d of %d' % tuple(r['thin']):>14}{extra}")
        steps = r["layer_peaks"]
        if len(steps) > 1:
            print(f"{'':>6}peak RSS after each layer (GB): {' '.join(f'{x / 1e9:.2f}' for x in steps)}; "
                  f"last / first {steps[-1] / steps[0]:.3f} (target: flat, ~1)")
    if len(peaks) > 1:
        print(f"peak RSS, {args.layers[-1]} layers / {args.layers[0]}: {peaks[-1] / peaks[0]:.3f} (target: flat, ~1)")
        if args.gptq:
            print(f"with expert GPTQ, {args.layers[-1]} layers / {args.layers[0]}: "
                  f"{gptq_peaks[-1] / gptq_peaks[0]:.3f} (target: flat, ~1)")


if __name__ == "__main__":
    start = time.monotonic()
    main()
    print(f"bench took {time.monotonic() - start:.0f} s")
