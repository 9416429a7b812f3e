"""Training: AdamW on next-token cross-entropy, experts balanced by the routing bias."""

from __future__ import annotations

import math
import time

import numpy as np

def train(model, stream: np.ndarray, args) -> list[tuple[int, float]]:
    import mlx.core as mx
    import mlx.optimizers as optim
    from mlx import nn
    from mlx.utils import tree_flatten

    mx.random.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    L, B = args.seq_len, args.batch
    n_params = sum(v.size for _, v in tree_flatten(model.parameters()))
    print(f"parameters: {n_params:,}", flush=True)

    moes = [l.block_sparse_moe for l in model.layers if l.is_moe]
    for moe in moes:  # the balancing bias is set by hand below, not by the optimizer
        moe.freeze(keys=["e_score_correction_bias"], recurse=False)
    opt = optim.AdamW(learning_rate=args.lr, weight_decay=0.05, betas=(0.9, 0.95))

    def loss_fn(model, x, y):
        logits = model(x)
        return nn.losses.cross_entropy(logits, y, reduction="mean")

    loss_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, opt.state]

    def step(x, y):
        loss, grads = loss_and_grad(model, x, y)
        grads, _ = optim.clip_grad_norm(grads, 1.0)
        opt.update(model, grads)
        return loss

    if args.compile:
        step = mx.compile(step, inputs=state, outputs=state)

    def routing_counts(x):
        # Expert load per MoE layer for the balancing bias update (no grad).
        h = model.language_model.model.embed_tokens(x)
        from mlx_lm.models.base import create_attention_mask

        mask = create_attention_mask(h, None)
        counts = []
        for layer in model.layers:
            r = h + layer.self_attn(layer.input_layernorm(h), mask, None)
            if layer.is_moe:
                moe = layer.block_sparse_moe
                z = layer.post_attention_layernorm(r).reshape(-1, h.shape[-1])
                s = mx.sigmoid(moe.gate(z)) + moe.e_score_correction_bias
                k = moe.num_experts_per_tok
                inds = mx.argpartition(-s, kth=k - 1, axis=-1)[..., :k]
                counts.append(
                    (inds[..., None] == mx.arange(s.shape[-1])).sum(axis=(0, 1))
                )
                r = r + moe(layer.post_attention_layernorm(r))
            else:
                r = r + layer.mlp(layer.post_attention_layernorm(r))
            h = r
        return counts

    def batch():
        starts = rng.integers(0, len(stream) - L - 1, size=B)
        chunk = np.stack([stream[s : s + L + 1] for s in starts])
        return mx.array(chunk[:, :-1]), mx.array(chunk[:, 1:])

    budget = args.minutes * 60.0
    t0 = time.time()
    log, avg, it = [], None, 0
    warmup = 30
    while True:
        elapsed = time.time() - t0
        progress = elapsed / budget if args.steps is None else it / args.steps
        if progress >= 1.0:
            break
        lr = args.lr * min(1.0, (it + 1) / warmup)
        lr *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        opt.learning_rate = lr
        x, y = batch()
        loss = step(x, y)
        mx.eval(loss, model.parameters(), opt.state)
        if it % 8 == 0:
            # Auxiliary-loss-free balancing: raise the bias of under-used experts.
            counts = routing_counts(x)
            for moe, c in zip(moes, counts):
                c = c.astype(mx.float32)
                moe.e_score_correction_bias = (
                    moe.e_score_correction_bias + 2e-3 * mx.sign(c.mean() - c)
                )
            mx.eval([m.e_score_correction_bias for m in moes])
        lv = loss.item()
        avg = lv if avg is None else 0.98 * avg + 0.02 * lv
        if it % 25 == 0:
            print(
                f"step {it:5d}  loss {lv:.3f}  avg {avg:.3f}  lr {lr:.2e}  "
                f"{time.time() - t0:7.1f}s  tok/s {(it + 1) * B * L / (time.time() - t0):.0f}",
                flush=True,
            )
            log.append((it, avg))
        it += 1
    log.append((it, avg))
    print(
        f"trained {it} steps, {it * B * L:,} tokens in {time.time() - t0:.0f}s; "
        f"final smoothed loss {avg:.3f}",
        flush=True,
    )
    if moes:
        counts = routing_counts(batch()[0])
        for i, c in enumerate(counts):
            print(f"expert load, MoE layer {i}: {np.array(c).tolist()}")
    return log
