"""One decoder layer's learned quantization: rounding, scales and biases tuned with MLX autograd.

    QuantLinear / QuantSwitch     stand-ins holding the stock MLX tensors (packed, scales, biases)
    train_layer(layer, call, modules, inputs, target, settings, ...) -> LayerResult

Rounding (AutoRound, Cheng et al. 2023): each value's integer is
``clip(round(L0 + f + v))`` where L0 is the GPTQ start's integer, f where the
float weight lies between integers (clipped to +-0.49, so v = 0 is exactly the
start) and v a learned offset in [-0.5, 0.5], moved by sign-SGD with the
rounding's gradient passed straight through. The stand-in then computes with
the dequantized float weight (``mx.gather_mm`` for experts). A unit too big for
the rounding's state (ROUNDING_MAX_VALUES) keeps its integers and computes on
its packed values (`mx.quantized_matmul`, `mx.gather_qmm`). Either way the
gradient is written by hand (`_Quantized._apply`), so that one step's memory
stays near the parameters' own.

Scales and biases are parameterised relative to the start:
``scale = s0 * (1 + a)``, ``bias = b0 + s0 * c`` (Adam, small steps), and are
rounded to the output dtype in every forward pass (gradient straight through),
so training sees exactly what is stored. Why the rounding matters most: in
bfloat16 a scale moves in steps of 0.4%, and on the models measured here such
coherent steps of every value of a group cost more than they bring; flipping
single roundings is fine-grained. Either way the result is exactly the stock
layout, the same bytes as a plain conversion.

The loss is the mean squared difference between the layer's output and the
target (see learned.py for which inputs and which target). Every few steps the
held-out sequences are measured; the best such point is kept, and the start
is one of the candidates, so a layer never ends worse than its GPTQ start on
the held-out tokens.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

SEQUENCES_PER_CALL = 8  # as the calibration pass: attention memory grows with the square of the length


@dataclass(frozen=True)
class LearnSettings:
    steps: int = 200  # optimizer steps per layer
    learning_rate: float = 1e-4  # Adam, on the relative parameters a and c; warm-up, then cosine decay
    warmup: float = 0.1  # of the steps: Adam's first steps move every parameter by the full rate
    batch: int = 4  # sequences per step
    holdout: int = 4  # sequences never trained on, which pick the kept point
    seconds_per_layer: float | None = None  # a time budget per layer; None: the steps only
    rounding: bool = True  # also learn each value's rounding (AutoRound's offset, sign-SGD)
    rounding_rate: float = 5e-3  # sign-SGD step of the offset (AutoRound's 1/200); warm-up and decay as above

    def key(self) -> str:
        return (f"{self.steps}:{self.learning_rate}:{self.warmup}:{self.batch}:{self.holdout}:{self.rounding}:"
                f"{self.rounding_rate}")


@dataclass(frozen=True)
class LayerResult:
    start_error: float  # held-out relative squared error of the layer output, GPTQ start
    error: float  # the same, kept point
    steps: int  # optimizer steps taken


# Learn the rounding of a unit only while its state stays this small: the start's integers and fractions,
# the offsets, their gradient and update, the kept point (about 16 bytes a value at a step's peak,
# bench/bench_learned_memory.py). Bigger units (a full-width MoE's stacked experts) learn their scales and
# biases only, on their packed values.
ROUNDING_MAX_VALUES = 64 * 2**20
# Rows at a time of a float weight or its integers made, and of a linear's gradient (smaller: slower).
ROUNDING_BLOCK_VALUES = 2**18


def learns_rounding(values: int) -> bool:
    """Whether a unit of `values` values learns its rounding (else its scales and biases only)."""
    return values <= ROUNDING_MAX_VALUES


def _stored_value(x, dtype):
    """`x` rounded to `dtype`, with the gradient passed straight through at full precision."""
    return x + mx.stop_gradient(x.astype(dtype).astype(mx.float32) - x)


def _plain(a):
    """A copy of `a` that holds no graph (see `_Quantized._apply` for why)."""
    if a.dtype == mx.float32:
        return mx.array(np.asarray(a))
    return mx.array(np.asarray(a.astype(mx.float32))).astype(a.dtype)


class _Quantized(nn.Module):
    """Common to both stand-ins: the stock tensors, the parameters and their hand-written gradient."""

    def __init__(self, tensors, bias, group_size: int, bits: int, mode: str, dtype):
        super().__init__()
        if bias is not None:
            self.bias = bias.astype(mx.float32)
        self.group_size, self.bits, self.mode, self.out_dtype = group_size, bits, mode, dtype
        self._start(*tensors)
        self.freeze()

    def _start(self, weight, scales, biases=None) -> None:
        """The point the parameters are relative to. The scales and biases stay in the dtype they
        are written in (half of float32's memory: 0.45 GB of a full-width MiniMax-M3 layer)."""
        self.weight, self.s0, self.b0 = weight, scales, biases
        self.levels0 = self.frac = self.v = None
        self.a = self.c = None if biases is None else mx.zeros(scales.shape, dtype=mx.float32)

    def learn_rounding(self, weight) -> None:
        """Keep what learning the rounding needs: the start's integers and where the float weight
        lies between them (`frac`, in steps, within +-0.5 so that the start rounds to itself)."""
        ones = mx.ones(self.s0.shape, dtype=mx.float32)
        levels = mx.dequantize(self.weight, ones, mx.zeros_like(ones), group_size=self.group_size, bits=self.bits)
        shape = (*levels.shape[:-1], levels.shape[-1] // self.group_size, self.group_size)
        w = weight.astype(mx.float32).reshape(shape)
        s, b = self.s0.astype(mx.float32)[..., None], self.b0.astype(mx.float32)[..., None]
        safe = mx.where(s != 0, s, 1.0)
        frac = mx.where(s != 0, (w - b) / safe - levels.reshape(shape), 0.0)
        self.levels0 = levels.astype(mx.uint8)
        self.frac = mx.clip(frac, -0.49, 0.49).reshape(levels.shape).astype(mx.float16)
        mx.eval(self.levels0, self.frac)

    @property
    def rounds(self) -> bool:
        return self.levels0 is not None

    def _position(self, v, rows: slice = slice(None)):
        """Where rows `rows` of the flattened weight lie on the integer grid at offsets `v` (those rows')."""
        width = self.levels0.shape[-1]
        return (self.levels0.reshape(-1, width)[rows].astype(mx.float32)
                + self.frac.reshape(-1, width)[rows].astype(mx.float32) + v.reshape(-1, width))

    def _level_blocks(self, v):
        """(rows, their integers at rounding offsets `v`, as float32), a block of the flattened weight's
        rows at a time: made whole, their float32 intermediates take about 16 bytes a value."""
        width = self.levels0.shape[-1]
        v = v.reshape(-1, width)
        step = max(ROUNDING_BLOCK_VALUES // width, 1)
        for a in range(0, v.shape[0], step):
            rows = slice(a, a + step)
            yield rows, mx.clip(mx.round(self._position(v[rows], rows)), 0, 2**self.bits - 1)

    def levels(self, v):
        """The integers at rounding offsets `v`, as uint8 in the weight's shape."""
        out = np.empty((v.size // self.levels0.shape[-1], self.levels0.shape[-1]), dtype=np.uint8)
        for rows, levels in self._level_blocks(v):
            out[rows] = np.asarray(levels.astype(mx.uint8))
        return mx.array(out).reshape(self.levels0.shape)

    def _grouped(self, a):
        return a.reshape(*a.shape[:-1], a.shape[-1] // self.group_size, self.group_size)

    def _plain_weight(self, v, scales, biases):
        """The dequantized float32 weight at rounding offsets `v`, as a plain array made a block of rows
        at a time: evaluated whole inside a gradient transform, every float32 intermediate of it would
        be alive at once (about 28 bytes a value)."""
        width, groups = self.levels0.shape[-1], scales.shape[-1]
        scales, biases = scales.reshape(-1, groups, 1), biases.reshape(-1, groups, 1)
        out = np.empty((v.size // width, width), dtype=np.float32)
        for rows, levels in self._level_blocks(v):
            out[rows] = np.asarray((self._grouped(levels) * scales[rows] + biases[rows]).reshape(-1, width))
        return mx.array(out).reshape(self.levels0.shape)

    @property
    def trainable(self) -> bool:
        return self.mode == "affine" and self.b0 is not None

    def zero_params(self) -> dict:
        params = {"a": mx.zeros(self.s0.shape, dtype=mx.float32), "c": mx.zeros(self.s0.shape, dtype=mx.float32)}
        return params | ({"v": mx.zeros(self.levels0.shape, dtype=mx.float32)} if self.rounds else {})

    def set_params(self, p: dict) -> None:
        """The point the unit computes at (in a gradient transform, the transform's parameters)."""
        self.a, self.c = p["a"], p["c"]
        if self.rounds:
            self.v = p["v"]

    def rounded_scales_biases(self, a, c):
        """The scales and biases of relative parameters `a`, `c`, rounded to the output dtype so that
        training sees exactly what is written (float32 holding those values)."""
        s0 = self.s0.astype(mx.float32)
        return (_stored_value(s0 * (1 + a), self.out_dtype),
                _stored_value(self.b0.astype(mx.float32) + s0 * c, self.out_dtype))

    def scales_biases(self) -> tuple:
        """The scales and biases at the current point, in the output dtype: what is written."""
        return self._written(self.a, self.c) if self.trainable else (self.s0, self.b0)

    def _written(self, a, c) -> tuple:
        return tuple(t.astype(self.out_dtype) for t in self.rounded_scales_biases(a, c))

    def _params(self) -> dict:
        return {"a": self.a, "c": self.c} | ({"v": self.v} if self.rounds else {})

    def _apply(self, x, float_matmul, packed_matmul, chunks):
        """The unit on `x`, differentiable in `x` and in the parameters: `float_matmul(x, weight)` on the
        float weight of the learned rounding, or `packed_matmul(x, scales, biases)` on the packed values
        where the unit keeps its start's rounding. `chunks(x, cotangent)` yields the pieces the
        parameters' gradient is formed in (see `_gradients`).

        The gradient is written by hand and evaluated as it is formed, one chunk's float32 weight
        gradient at a time: MLX's own gradient of gather_qmm forms every expert's at once (9.7 GB for one
        full-width MiniMax-M3 projection). Inside a gradient transform MLX keeps the graph of every array
        it evaluates until the step ends, so the unit's output and its input's gradient are handed on
        as plain arrays, and the float weight is made a block at a time: with their graphs, the float
        weights of M3's attention and every intermediate of them stayed resident (about 66 bytes a
        value, 7 GB a layer; bench/bench_learned_memory.py --attention)."""
        if not self.trainable:  # nothing to learn (no biases in this mode): MLX's call as it is
            return packed_matmul(x, self.s0, self.b0)

        def matmul(x, params):
            scales, biases = self.rounded_scales_biases(params["a"], params["c"])
            if "v" in params:
                return float_matmul(x, self._plain_weight(params["v"], scales, biases))
            return packed_matmul(x, scales, biases)

        @mx.custom_function
        def unit(x, params):
            return _plain(matmul(x, params))

        @unit.vjp
        def unit_vjp(primals, cotangent, output):
            x, params = primals
            dx = _plain(mx.vjp(lambda x: matmul(x, params), [x], [cotangent])[1][0])  # the forward's graph unheld
            return dx, self._gradients(chunks(x, cotangent), params)

        return unit(x, self._params())

    def _gradients(self, chunks, params) -> dict:
        """d loss / d a, c (and the offsets v), a chunk of the flattened [rows, in] weight's rows at a
        time: `chunks` yields (rows, inputs [n, in], output cotangents [n, rows]); rows no chunk
        covers (an expert no token reached) get none."""
        groups = self.s0.shape[-1]
        width = groups * self.group_size
        # Made again rather than shared with the input's gradient: held across both, the scales keep their
        # graph (bench_learned_memory.py: 15.6 against 15.3 bytes a value).
        scales = self.rounded_scales_biases(params["a"], params["c"])[0].reshape(-1, groups)
        d_scales = np.zeros(scales.shape, dtype=np.float32)
        d_biases = np.zeros(scales.shape, dtype=np.float32)
        v = params.get("v")
        d_offsets = np.zeros((scales.shape[0], width), dtype=np.float32) if v is not None else None
        packed = self.weight.reshape(-1, self.weight.shape[-1])
        for rows, xs, cs in chunks:
            g = cs.astype(mx.float32).T @ xs.astype(mx.float32)  # these rows' float weight's gradient
            if v is None:
                ones = mx.ones((g.shape[0], groups))
                levels = mx.dequantize(packed[rows], ones, mx.zeros_like(ones), group_size=self.group_size,
                                       bits=self.bits)
            else:
                rounded = mx.round(self._position(v.reshape(-1, width)[rows], rows))
                levels = mx.clip(rounded, 0, 2**self.bits - 1)
                # Straight through the rounding; the clip passes the gradient where it did not bind
                # (torch.clamp's rule, as in AutoRound), so a value on the grid's edge can move inwards.
                inside = (self._grouped(g) * scales[rows][..., None]).reshape(g.shape)
                d_offsets[rows] = np.asarray(mx.where(levels == rounded, inside, 0.0))
            d_scales[rows] = np.asarray(mx.sum(self._grouped(g * levels), axis=-1))
            d_biases[rows] = np.asarray(mx.sum(self._grouped(g), axis=-1))
        # scale = s0 (1 + a), bias = b0 + s0 c; the rounding to the output dtype passes it straight through
        s0 = self.s0.astype(mx.float32)
        grads = {"a": mx.array(d_scales).reshape(s0.shape) * s0, "c": mx.array(d_biases).reshape(s0.shape) * s0}
        return grads | ({"v": mx.array(d_offsets).reshape(v.shape)} if v is not None else {})

    def kept(self, p: dict) -> dict:
        """Point `p` as it would be written, to keep aside while training goes on: the integers as
        uint8 (1 byte a value, where the offsets take 4), the scales and biases in the output dtype
        (half of the float32 parameters)."""
        scales, biases = self._written(p["a"], p["c"])
        return {"scales": scales, "biases": biases} | ({"levels": self.levels(p["v"])} if self.rounds else {})

    def take(self, kept: dict) -> None:
        """Make a kept point the unit's own, exactly: its packed values, scales and biases become
        the start, with nothing left to learn."""
        from studio.core.calibration.quantizer import pack

        weight = pack(kept["levels"], self.bits) if "levels" in kept else self.weight
        self._start(weight, kept["scales"], kept["biases"])
        mx.eval(self.weight)

    def stored(self) -> list:
        """The tensors to write: packed values, scales and biases in the output dtype."""
        from studio.core.calibration.quantizer import pack

        weight = pack(self.levels(self.v), self.bits) if self.rounds else self.weight
        scales, biases = self.scales_biases()
        return [weight, scales] + ([biases] if biases is not None else [])


class QuantLinear(_Quantized):
    def __call__(self, x):
        y = self._apply(x, lambda x, w: x @ w.T, self._quantized_matmul, self._chunks)
        return y + self.bias if "bias" in self else y

    def _quantized_matmul(self, x, scales, biases):
        return mx.quantized_matmul(x, self.weight, scales, biases, transpose=True, group_size=self.group_size,
                                   bits=self.bits, mode=self.mode)

    def _chunks(self, x, cotangent):
        """Blocks of output rows."""
        out, width = self.s0.shape[0], x.shape[-1]
        xs, cs = x.reshape(-1, width), cotangent.reshape(-1, out)
        step = max(ROUNDING_BLOCK_VALUES // width, 1)
        for a in range(0, out, step):
            yield slice(a, a + step), xs, cs[:, a:a + step]


class QuantSwitch(_Quantized):
    """mlx-lm's QuantizedSwitchLinear call: `(x, indices, sorted_indices)`."""

    def __call__(self, x, indices, sorted_indices: bool = False):
        def gather_mm(x, w):
            return mx.gather_mm(x, w.swapaxes(-1, -2), rhs_indices=indices, sorted_indices=sorted_indices)

        def gather_qmm(x, scales, biases):
            return mx.gather_qmm(x, self.weight, scales, biases, rhs_indices=indices, transpose=True,
                                 group_size=self.group_size, bits=self.bits, mode=self.mode,
                                 sorted_indices=sorted_indices)

        y = self._apply(x, gather_mm, gather_qmm, functools.partial(self._chunks, indices=indices))
        return y + mx.expand_dims(self.bias[indices], -2) if "bias" in self else y

    def _chunks(self, x, cotangent, indices):
        """An expert at a time, with the rows routed to it."""
        experts, out, _ = self.s0.shape
        width = x.shape[-1]
        rows_x = mx.broadcast_to(x, (*indices.shape, *x.shape[-2:])).reshape(-1, width)
        rows_c = cotangent.reshape(-1, out)
        flat = np.asarray(indices.reshape(-1))
        order = np.argsort(flat, kind="stable")
        bounds = np.searchsorted(flat[order], np.arange(experts + 1))
        for e in range(experts):
            rows = order[bounds[e]:bounds[e + 1]]
            if rows.size:
                picked = mx.array(rows)
                yield slice(e * out, (e + 1) * out), rows_x[picked], rows_c[picked]


def run_layer(layer, call, h):
    """The layer over every sequence of `h`, SEQUENCES_PER_CALL at a time, evaluated. `call`
    (a layers.LayerCall) passes the layer what the model's own `__call__` would."""
    outs = []
    for a in range(0, h.shape[0], SEQUENCES_PER_CALL):
        y = call(layer, h[a:a + SEQUENCES_PER_CALL], a)
        mx.eval(y)
        outs.append(y)
    out = mx.concatenate(outs, axis=0) if len(outs) > 1 else outs[0]
    mx.eval(out)
    return out


def relative_error(layer, call, h, target, first: int = 0) -> float:
    """Sum of squared differences over sum of squares of `target`: sequences first .. of the pass."""
    err = ref = 0.0
    for a in range(0, h.shape[0], SEQUENCES_PER_CALL):
        y = call(layer, h[a:a + SEQUENCES_PER_CALL], first + a)
        t = target[a:a + SEQUENCES_PER_CALL]
        e, r = mx.sum(mx.square(y - t)), mx.sum(mx.square(t))
        mx.eval(e, r)
        err, ref = err + e.item(), ref + r.item()
    return err / max(ref, 1e-30)


def _step(optimizer, params, grads, rounding_rate) -> None:
    """Adam on the scales and biases; sign-SGD on the rounding offsets, kept within +-0.5 (AutoRound).
    Updates `params` in place a module at a time, each evaluated (and its gradient dropped) before the
    next, so that the update's transient copies (Adam's new moments, the new parameters beside the old)
    are one module's: a full-width MiniMax-M3 layer's experts hold 113 M groups, whose scales, biases,
    gradients and moments come to about 5 GB."""
    updated = optimizer.apply_gradients({k: {n: g[n] for n in ("a", "c")} for k, g in grads.items()},
                                        {k: {n: p[n] for n in ("a", "c")} for k, p in params.items()})
    for k in list(params):
        if "v" in params[k]:
            updated[k]["v"] = mx.clip(params[k]["v"] - rounding_rate * mx.sign(grads[k]["v"]), -0.5, 0.5)
        mx.eval(updated[k], optimizer.state[k])
        params[k] = updated.pop(k)
        del grads[k]


def train_layer(layer, call, modules: dict[str, _Quantized], inputs, target, settings: LearnSettings,
                seed: int = 0, check_cancel=None, on_step=None) -> LayerResult:
    """Tune `modules`' scales and biases so that `layer(inputs)` comes closer to `target`;
    leaves each module at its kept point (`take`). `on_step(step, steps, error)`
    reports progress; `check_cancel()` raises to stop (between steps)."""
    modules = {k: m for k, m in modules.items() if m.trainable}
    count = inputs.shape[0]
    holdout = min(settings.holdout, count // 2) if count > 1 else 0
    held = slice(0, holdout) if holdout else slice(0, count)  # too few sequences: measure on the trained ones
    batch = min(settings.batch, count - holdout)

    def measure(params) -> float:
        for name, m in modules.items():
            m.set_params(params[name])
        return relative_error(layer, call, inputs[held], target[held])

    params = {k: m.zero_params() for k, m in modules.items()}
    start_error = best_error = measure(params)
    if not modules or settings.steps <= 0:
        return LayerResult(start_error, start_error, 0)
    best = None  # the start, made again at the end: kept now, it would add to every step until one improves on it

    def loss_fn(params, x, y, first):
        for name, m in modules.items():
            m.set_params(params[name])
        return mx.mean(mx.square(call(layer, x, first) - y))

    step_fn = mx.value_and_grad(loss_fn)
    warm = max(int(settings.warmup * settings.steps), 1)
    decay = max(settings.steps - warm, 1)  # MLX's cosine decay refuses 0 steps (a 1-step run)
    schedule = optim.join_schedules([optim.linear_schedule(0.0, settings.learning_rate, warm),
                                     optim.cosine_decay(settings.learning_rate, decay)], [warm])
    optimizer = optim.Adam(learning_rate=schedule)
    rate = settings.rounding_rate
    rounding = optim.join_schedules([optim.linear_schedule(0.0, rate, warm),
                                     optim.cosine_decay(rate, decay)], [warm])
    rng = np.random.default_rng(seed)
    check_every = max(settings.steps // 8, 1)
    started = time.monotonic()
    step = 0
    for step in range(1, settings.steps + 1):
        if check_cancel is not None:
            check_cancel()
        # A run of consecutive sequences: a per-sequence argument of the layer's call is cut to match.
        a = int(rng.integers(holdout, count - batch + 1))
        loss, grads = step_fn(params, inputs[a:a + batch], target[a:a + batch], a)
        _step(optimizer, params, grads, rounding(step - 1))
        mx.eval(optimizer.state, loss)
        out_of_time = settings.seconds_per_layer is not None and time.monotonic() - started > settings.seconds_per_layer
        if step % check_every == 0 or step == settings.steps or out_of_time:
            error = measure(params)
            if error < best_error:
                best_error, best = error, _kept(modules, params)
        if on_step is not None:
            on_step(step, settings.steps, best_error)
        if out_of_time:
            break
    del params, grads, optimizer
    for name, m in modules.items():
        m.take(m.kept(m.zero_params()) if best is None else best[name])
    return LayerResult(start_error, best_error, step)


def _kept(modules, params) -> dict:
    kept = {name: m.kept(params[name]) for name, m in modules.items()}
    mx.eval(kept)
    return kept
