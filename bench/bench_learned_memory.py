"""Benchmark: memory of one learned-rounding step on a stack of experts, hand-written gradient vs autograd's.

The learned method (studio.core.calibration.learned_layer) tunes each value's
rounding offset of a stacked-expert unit through a float32 working copy of its
weight. Autograd's straight-through graph for that copy (position = start +
fraction + offset, round, clip, times scale plus bias) keeps each float32
intermediate of the whole unit until the backward pass; the stand-in writes
the gradient by hand, a block of rows at a time. Both compute the same
gradient (tests/test_calibration_learned.py checks it); this prints the peak
MLX memory of one step (loss, gradient, sign-SGD update of the offsets) in
bytes per weight value, beyond what the unit holds between steps, and the
time, for a SmolLM2-MoE-shaped unit (the mlp's gate projection: 8 experts of
1536 x 576, top-2) by default.

    python bench/bench_learned_memory.py [--experts 8] [--out 1536] [--in 576] [--tokens 1024] [--bits 4]
                                         [--packed]

--packed measures what a unit too wide to learn its rounding does (full-width
MiniMax-M3 experts): scales and biases only, on the packed values. MLX's own
gradient of gather_qmm with respect to them forms every expert's float32 weight
gradient at once; the stand-in forms it one expert at a time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlx_lm.models.switch_layers import _gather_sort  # noqa: E402

from studio.core.calibration.learned_layer import QuantSwitch  # noqa: E402

TOP_K = 2


def autograd_loss(module, x, indices, target):
    """The straight-through estimator as autograd sees it (the stand-in's forward before the
    hand-written gradient): the same values and the same gradient."""
    bits, (experts, out, width) = module.bits, module.levels0.shape

    def loss(p):
        module.set_params(p)
        position = module.levels0.astype(mx.float32) + module.frac.astype(mx.float32) + p["v"]
        levels = mx.stop_gradient(mx.clip(mx.round(position), 0, 2**bits - 1))
        inside = mx.stop_gradient((levels == mx.round(position)).astype(mx.float32))
        levels = levels + inside * (position - mx.stop_gradient(position))
        groups = width // module.group_size
        w = levels.reshape(experts, out, groups, module.group_size)
        w = w * module.scales[..., None] + module.biases[..., None]
        y = mx.gather_mm(x, w.reshape(experts, out, width).swapaxes(-1, -2), rhs_indices=indices, sorted_indices=True)
        return mx.mean(mx.square(y - target))

    return loss


def mlx_packed_loss(module, x, indices, target):
    """Scales and biases on packed values through MLX's own gather_qmm gradient."""
    def loss(p):
        module.set_params(p)
        y = mx.gather_qmm(x, module.weight, module.scales, module.biases, rhs_indices=indices, transpose=True,
                          group_size=module.group_size, bits=module.bits, sorted_indices=True)
        return mx.mean(mx.square(y - target))

    return loss


def standin_loss(module, x, indices, target):
    def loss(p):
        module.set_params(p)
        return mx.mean(mx.square(module(x, indices, sorted_indices=True) - target))

    return loss


def one_step(make_loss, module, x, indices, target) -> tuple[float, float]:
    """Peak bytes beyond what was allocated before the step, and seconds, of one training step."""
    params = module.zero_params()
    mx.eval(params)
    loss_fn = make_loss(module, x, indices, target)
    mx.eval(mx.value_and_grad(loss_fn)(params))  # warm-up: kernels, allocator
    mx.clear_cache()
    before = mx.get_active_memory()
    mx.reset_peak_memory()
    start = time.perf_counter()
    loss, grads = mx.value_and_grad(loss_fn)(params)
    offsets = mx.clip(params["v"] - 5e-3 * mx.sign(grads["v"]), -0.5, 0.5) if "v" in params else loss
    mx.eval(loss, offsets, grads["a"], grads["c"])
    return mx.get_peak_memory() - before, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--out", type=int, default=1536)
    parser.add_argument("--in", dest="width", type=int, default=576)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--packed", action="store_true", help="scales and biases only, on packed values")
    args = parser.parse_args()

    mx.random.seed(0)
    w = 0.02 * mx.random.normal((args.experts, args.out, args.width))
    module = QuantSwitch(list(mx.quantize(w, group_size=64, bits=args.bits)), None, 64, args.bits, "affine",
                         mx.bfloat16)
    if not args.packed:
        module.learn_rounding(w)
    del w
    x, indices, _ = _gather_sort(mx.random.normal((args.tokens, 1, 1, args.width)),
                                 mx.random.randint(0, args.experts, (args.tokens, TOP_K)))
    target = mx.random.normal((args.tokens * TOP_K, 1, args.out))
    mx.eval(module.parameters(), x, indices, target, *([] if args.packed else [module.levels0, module.frac]))
    values = args.experts * args.out * args.width
    print(f"{args.experts} experts of {args.out} x {args.width} ({values / 1e6:.1f}M values), {args.bits} bits, "
          f"{args.tokens} tokens top-{TOP_K}")
    peer = mlx_packed_loss if args.packed else autograd_loss
    rows = {name: one_step(make, module, x, indices, target)
            for name, make in (("autograd", peer), ("hand-written", standin_loss))}
    print(f"{'gradient':<14}{'peak B/value':>14}{'peak MB':>10}{'seconds':>9}")
    for name, (peak, seconds) in rows.items():
        print(f"{name:<14}{peak / values:>14.1f}{peak / 1e6:>10.0f}{seconds:>9.2f}")
    (a, ta), (b, tb) = rows["autograd"], rows["hand-written"]
    print(f"hand-written / autograd: memory {b / a:.2f}x, time {tb / ta:.2f}x")


if __name__ == "__main__":
    main()
