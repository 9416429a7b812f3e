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

--attention measures a linear of --out x --in that learns its rounding (an
attention projection) feeding packed experts, as in a MiniMax-M3 layer, per
value of the linear. The experts' gradient is evaluated as it is formed, and
inside a gradient transform MLX then keeps the graph of every array evaluated:
the stand-ins hand on plain arrays so that the linear's float weight and its
intermediates do not stay resident. The peer is autograd for both (the
straight-through estimator, MLX's own gather_qmm gradient).

    python bench/bench_learned_memory.py --attention --out 4096 --in 4096
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlx.utils import tree_flatten  # noqa: E402
from mlx_lm.models.switch_layers import _gather_sort  # noqa: E402

from studio.core.calibration.learned_layer import QuantLinear, QuantSwitch  # noqa: E402

TOP_K = 2


def autograd_loss(module, x, indices, target):
    """The straight-through estimator as autograd sees it: the same values and the same gradient."""
    def loss(p):
        module.set_params(p)
        y = mx.gather_mm(x, autograd_weight(module, p).swapaxes(-1, -2), rhs_indices=indices, sorted_indices=True)
        return mx.mean(mx.square(y - target))

    return loss


def autograd_weight(module, p):
    """The rounding's straight-through estimator, as autograd sees it."""
    position = module.levels0.astype(mx.float32) + module.frac.astype(mx.float32) + p["v"]
    levels = mx.stop_gradient(mx.clip(mx.round(position), 0, 2**module.bits - 1))
    inside = mx.stop_gradient((levels == mx.round(position)).astype(mx.float32))
    levels = levels + inside * (position - mx.stop_gradient(position))
    scales, biases = module.rounded_scales_biases(p["a"], p["c"])
    w = levels.reshape(*scales.shape, -1) * scales[..., None] + biases[..., None]
    return w.reshape(levels.shape)


def mlx_packed_loss(module, x, indices, target):
    """Scales and biases on packed values through MLX's own gather_qmm gradient."""
    def loss(p):
        scales, biases = module.rounded_scales_biases(p["a"], p["c"])
        y = mx.gather_qmm(x, module.weight, scales, biases, rhs_indices=indices, transpose=True,
                          group_size=module.group_size, bits=module.bits, sorted_indices=True)
        return mx.mean(mx.square(y - target))

    return loss


def standin_loss(module, x, indices, target):
    def loss(p):
        module.set_params(p)
        return mx.mean(mx.square(module(x, indices, sorted_indices=True) - target))

    return loss


def attention_losses(linear, experts, x, target):
    """A rounding linear feeding packed experts (top-2 of their count), autograd's and the stand-ins'."""
    count = experts.s0.shape[0]
    routes = mx.random.randint(0, count, (x.shape[0], TOP_K))

    def make(linear_call, experts_call):
        def loss(p):
            linear.set_params(p["linear"])
            experts.set_params(p["experts"])
            h = linear_call(p["linear"], x)
            h, indices, _ = _gather_sort(h.reshape(-1, 1, 1, h.shape[-1]), routes)
            return mx.mean(mx.square(experts_call(h, indices) - target))
        return loss

    def straight_through(p, x):
        return x @ autograd_weight(linear, p).T

    def gather_qmm(h, indices):
        scales, biases = experts.rounded_scales_biases(experts.a, experts.c)  # at the point set_params set
        return mx.gather_qmm(h, experts.weight, scales, biases, rhs_indices=indices,
                             transpose=True, group_size=experts.group_size, bits=experts.bits, sorted_indices=True)

    return (make(straight_through, gather_qmm),
            make(lambda p, x: linear(x), lambda h, indices: experts(h, indices, sorted_indices=True)))


def attention_step(args) -> tuple[int, dict]:
    w = 0.02 * mx.random.normal((args.out, args.width))
    linear = QuantLinear(list(mx.quantize(w, group_size=64, bits=4)), None, 64, 4, "affine", mx.bfloat16)
    linear.learn_rounding(w)
    del w
    w = 0.02 * mx.random.normal((args.experts, 512, args.out))
    experts = QuantSwitch(list(mx.quantize(w, group_size=64, bits=2)), None, 64, 2, "affine", mx.bfloat16)
    del w
    x = mx.random.normal((args.tokens, args.width))
    target = mx.random.normal((args.tokens * TOP_K, 1, 512))
    mx.eval(linear.parameters(), experts.parameters(), linear.levels0, linear.frac, x, target)
    values = args.out * args.width
    print(f"a linear of {args.out} x {args.width} ({values / 1e6:.1f}M values, 4 bits, learning its rounding) "
          f"feeding {args.experts} packed experts of 512 x {args.out} (2 bits), {args.tokens} tokens top-{TOP_K}")
    peer, ours = attention_losses(linear, experts, x, target)
    params = {"linear": linear.zero_params(), "experts": experts.zero_params()}
    return values, {name: one_step(loss, params) for name, loss in (("autograd", peer), ("hand-written", ours))}


def one_step(loss_fn, params) -> tuple[float, float]:
    """Peak bytes beyond what was allocated before the step, and seconds, of one training step
    (loss, gradient, sign-SGD update of the rounding offsets)."""
    mx.eval(params)
    mx.eval(mx.value_and_grad(loss_fn)(params))  # warm-up: kernels, allocator
    mx.clear_cache()
    before = mx.get_active_memory()
    mx.reset_peak_memory()
    start = time.perf_counter()
    loss, grads = mx.value_and_grad(loss_fn)(params)
    offsets = [mx.clip(p - 5e-3 * mx.sign(g), -0.5, 0.5)
               for (name, p), (_, g) in zip(tree_flatten(params), tree_flatten(grads)) if name.split(".")[-1] == "v"]
    mx.eval(loss, grads, offsets)
    return mx.get_peak_memory() - before, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--out", type=int, default=1536)
    parser.add_argument("--in", dest="width", type=int, default=576)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--packed", action="store_true", help="scales and biases only, on packed values")
    parser.add_argument("--attention", action="store_true", help="a rounding linear feeding packed experts")
    args = parser.parse_args()

    mx.random.seed(0)
    if args.attention:
        values, rows = attention_step(args)
    else:
        values, rows = experts_step(args)
    print(f"{'gradient':<14}{'peak B/value':>14}{'peak MB':>10}{'seconds':>9}")
    for name, (peak, seconds) in rows.items():
        print(f"{name:<14}{peak / values:>14.1f}{peak / 1e6:>10.0f}{seconds:>9.2f}")
    (a, ta), (b, tb) = rows["autograd"], rows["hand-written"]
    print(f"hand-written / autograd: memory {b / a:.2f}x, time {tb / ta:.2f}x")


def experts_step(args) -> tuple[int, dict]:
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
    params = module.zero_params()
    return values, {name: one_step(make(module, x, indices, target), params)
                    for name, make in (("autograd", peer), ("hand-written", standin_loss))}


if __name__ == "__main__":
    main()
