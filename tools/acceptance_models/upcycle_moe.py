"""Build the MoE acceptance model: a Mixtral (``model_type`` "mixtral", 8 experts, top-2)
sparse-upcycled from the dense Llama of train_dense.py, then fine-tuned on the same text.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 \\
    nice -n 10 python tools/acceptance_models/upcycle_moe.py --dense /work/wt/_models/dense \\
        --out /work/wt/_models/moe --minutes 15

Upcycling (MoEfication-style split rather than 8 full copies, so the experts differ
from the first step and stay narrow): each layer's MLP intermediate channels are
grouped into 8 equal clusters by balanced k-means on their gate_proj rows; expert e
gets its cluster's gate/up rows and down columns (width intermediate/8; 128 for the
default dense model). The router row of expert e starts as its cluster's mean gate_proj
row, so a token goes first to the experts whose channels it excites most. The
down projection is scaled by --down-scale (default: the best of 1, 2, 4 on a training
batch) because only 2 of the 8 parts add up for a token. Attention, norms, embeddings
and lm_head are copied. Fine-tuning trains everything with next-token cross-entropy
plus a Switch-style load-balancing loss (coefficient --balance) so no expert starves,
while routing stays uneven enough that, on ~1-2k calibration tokens, some experts get
fewer than 4 tokens per input channel (the case the expert-GPTQ fallback is for).

Writes HF Mixtral names (model.layers.N.block_sparse_moe.experts.E.{w1,w2,w3}.weight,
block_sparse_moe.gate.weight), bf16, which mlx-lm's sanitize stacks. Not run by tests or CI.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EVAL_SAMPLE, heldout_perplexity, train, training_stream, write_folder  # noqa: E402

EXPERTS, TOP_K = 8, 2


def balanced_clusters(rows, k: int, iters: int = 15, seed: int = 0):
    """Split rows into k equal-size clusters (k-means, then capacity-limited assignment)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rows / (np.linalg.norm(rows, axis=1, keepdims=True) + 1e-8)
    n, cap = len(x), len(x) // k
    cent = x[rng.choice(n, k, replace=False)]
    for _ in range(iters):
        assign = np.argmax(x @ cent.T, axis=1)
        for c in range(k):
            if (assign == c).any():
                cent[c] = x[assign == c].mean(0)
    sim = x @ cent.T
    order = np.argsort(-sim.max(axis=1))  # most decided channels choose first
    groups = [[] for _ in range(k)]
    for i in order:
        for c in np.argsort(-sim[i]):
            if len(groups[c]) < cap:
                groups[c].append(i)
                break
    return [np.array(sorted(g)) for g in groups]


def mixtral_config(dense_cfg: dict) -> dict:
    cfg = {k: v for k, v in dense_cfg.items() if k not in ("mlp_bias", "attention_bias", "head_dim")}
    if dense_cfg["hidden_size"] // dense_cfg["num_attention_heads"] != dense_cfg.get(
        "head_dim", dense_cfg["hidden_size"] // dense_cfg["num_attention_heads"]
    ):
        raise SystemExit("Mixtral needs head_dim == hidden_size / num_attention_heads")
    cfg.update(
        architectures=["MixtralForCausalLM"],
        model_type="mixtral",
        intermediate_size=dense_cfg["intermediate_size"] // EXPERTS,
        num_local_experts=EXPERTS,
        num_experts_per_tok=TOP_K,
        router_aux_loss_coef=0.01,
        output_router_logits=False,
    )
    return cfg


def upcycle(dense, moe, down_scale: float) -> None:
    """Copy the dense weights into the Mixtral model, splitting each MLP into experts."""
    import mlx.core as mx
    import numpy as np

    moe.model.embed_tokens.weight = dense.model.embed_tokens.weight
    moe.model.norm.weight = dense.model.norm.weight
    moe.lm_head.weight = dense.lm_head.weight
    for dl, ml in zip(dense.model.layers, moe.model.layers):
        for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
            getattr(ml.self_attn, p).weight = getattr(dl.self_attn, p).weight
        ml.input_layernorm.weight = dl.input_layernorm.weight
        ml.post_attention_layernorm.weight = dl.post_attention_layernorm.weight
        gate = np.array(dl.mlp.gate_proj.weight)
        up = np.array(dl.mlp.up_proj.weight)
        down = np.array(dl.mlp.down_proj.weight)
        groups = balanced_clusters(gate, EXPERTS)
        sw = ml.block_sparse_moe.switch_mlp
        sw.gate_proj.weight = mx.array(np.stack([gate[g] for g in groups]))
        sw.up_proj.weight = mx.array(np.stack([up[g] for g in groups]))
        sw.down_proj.weight = mx.array(np.stack([down[:, g] * down_scale for g in groups]))
        ml.block_sparse_moe.gate.weight = mx.array(np.stack([gate[g].mean(0) for g in groups]))


def forward_with_balance(coef: float):
    """loss_extra for common.train: logits plus the Switch balance loss summed over layers."""
    import mlx.core as mx
    from mlx_lm.models.base import create_attention_mask

    def run(model, x):
        inner = model.model
        h = inner.embed_tokens(x)
        mask = create_attention_mask(h, None)
        aux = mx.array(0.0)
        for layer in inner.layers:
            h = h + layer.self_attn(layer.input_layernorm(h), mask, None)
            z = layer.post_attention_layernorm(h)
            moe = layer.block_sparse_moe
            logits = moe.gate(z).reshape(-1, moe.num_experts)
            probs = mx.softmax(logits, axis=-1)
            inds = mx.argpartition(-logits, kth=TOP_K - 1, axis=-1)[:, :TOP_K]
            hits = (inds[..., None] == mx.arange(moe.num_experts)).sum(axis=1)
            frac = mx.stop_gradient(hits.astype(mx.float32).mean(axis=0) / TOP_K)
            aux = aux + moe.num_experts * (frac * probs.mean(axis=0)).sum()
            h = h + moe(z)
        return model.lm_head(inner.norm(h)), coef * aux

    return run


def expert_load(model, ids, n_tokens: int = 2048):
    """Tokens routed to each expert per layer on the first n_tokens of ids (no grad)."""
    import mlx.core as mx
    from mlx_lm.models.base import create_attention_mask

    x = mx.array(ids[:n_tokens])[None]
    inner = model.model
    h = inner.embed_tokens(x)
    mask = create_attention_mask(h, None)
    loads = []
    for layer in inner.layers:
        h = h + layer.self_attn(layer.input_layernorm(h), mask, None)
        z = layer.post_attention_layernorm(h)
        moe = layer.block_sparse_moe
        logits = moe.gate(z).reshape(-1, moe.num_experts)
        inds = mx.argpartition(-logits, kth=TOP_K - 1, axis=-1)[:, :TOP_K]
        loads.append((inds[..., None] == mx.arange(moe.num_experts)).sum(axis=(0, 1)).tolist())
        h = h + moe(z)
    return loads


def hf_weights(model) -> dict:
    """The Mixtral model's parameters under HF names (per-expert w1/w2/w3)."""
    from mlx.utils import tree_flatten

    out = {}
    for name, v in tree_flatten(model.parameters()):
        if ".switch_mlp." not in name:
            out[name] = v
            continue
        prefix, rest = name.split(".switch_mlp.")
        proj = rest.split(".")[0]
        hf = {"gate_proj": "w1", "down_proj": "w2", "up_proj": "w3"}[proj]
        for e in range(v.shape[0]):
            out[f"{prefix}.experts.{e}.{hf}.weight"] = v[e]
    return out


def batch_loss(model, stream, n: int = 8, seq_len: int = 128, seed: int = 1) -> float:
    import mlx.core as mx
    import numpy as np
    from mlx import nn

    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(stream) - seq_len - 1, size=n)
    chunk = np.stack([stream[s : s + seq_len + 1] for s in starts])
    x, y = mx.array(chunk[:, :-1]), mx.array(chunk[:, 1:])
    return nn.losses.cross_entropy(model(x), y, reduction="mean").item()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dense", type=Path, required=True, help="folder from train_dense.py")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--deb", type=Path, help="a local r-cran-janeaustenr .deb")
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--down-scale", type=float, default=None)
    ap.add_argument("--balance", type=float, default=0.01)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm import load
    from mlx_lm.models.mixtral import Model, ModelArgs

    mx.set_default_device(mx.cpu)
    args.out.mkdir(parents=True, exist_ok=True)
    stream, tok = training_stream(args.out, args.deb, args.seed)
    dense, _ = load(str(args.dense))
    dense.set_dtype(mx.float32)
    dense_cfg = json.loads((args.dense / "config.json").read_text())
    cfg = mixtral_config(dense_cfg)
    moe = Model(ModelArgs.from_dict(cfg))
    print(f"dense loss on a training batch: {batch_loss(dense, stream):.3f}", flush=True)
    scales = [args.down_scale] if args.down_scale else [1.0, 2.0, 4.0]
    best = None
    for s in scales:
        upcycle(dense, moe, s)
        loss = batch_loss(moe, stream)
        print(f"upcycled, down scale {s:g}: loss {loss:.3f}", flush=True)
        if best is None or loss < best[1]:
            best = (s, loss)
    upcycle(dense, moe, best[0])
    n_params = sum(v.size for _, v in tree_flatten(moe.parameters()))
    print(f"parameters: {n_params:,}; down scale {best[0]:g}", flush=True)
    info = train(moe, stream, minutes=args.minutes, lr=args.lr, batch=args.batch,
                 seq_len=args.seq_len, seed=args.seed,
                 loss_extra=forward_with_balance(args.balance))
    eval_ids = tok.encode(EVAL_SAMPLE.read_text()).ids
    loads = expert_load(moe, eval_ids)
    for i, l in enumerate(loads):
        print(f"expert load, layer {i}, first 2048 held-out tokens (x top-2): {l}")
    info.update(parameters=n_params, upcycled_from=str(args.dense), down_scale=best[0],
                balance=args.balance, lr=args.lr, batch=args.batch, seq_len=args.seq_len,
                heldout_expert_load_2048=loads, built_by="tools/acceptance_models/upcycle_moe.py")
    write_folder(args.out, cfg, hf_weights(moe), info)
    ppl = heldout_perplexity(args.out)
    info["heldout_ppl"] = round(ppl, 3)
    write_folder(args.out, cfg, hf_weights(moe), info)
    print(f"wrote {args.out}: {n_params:,} parameters, held-out perplexity {ppl:.2f}")


if __name__ == "__main__":
    main()
