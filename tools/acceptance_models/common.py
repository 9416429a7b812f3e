"""Shared pieces of the acceptance-model builders: the Austen text, the token stream,
a wall-time-budgeted AdamW loop, the Hugging Face folder writer and a held-out perplexity.

The text, the held-out split and the tokenizer are those of the bundled demo model
(tools/train_demo_model.py), so the held-out text is exactly
studio/resources/eval_sample.txt and none of it is trained on.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1]
REPO = TOOLS.parent
DEMO = REPO / "studio" / "resources" / "demo_model"
EVAL_SAMPLE = REPO / "studio" / "resources" / "eval_sample.txt"
sys.path.insert(0, str(TOOLS))

from demo_model.corpus import fetch_deb, load_books, split_corpus  # noqa: E402
from demo_model.stream import build_stream  # noqa: E402
from demo_model.tokenizer import copy_tokenizer  # noqa: E402

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def training_stream(out: Path, deb: Path | None, seed: int = 0):
    """The demo model's training token stream (novels + chat turns), tokenizer copied to out.

    Refuses to go on if the held-out split differs from the shipped eval_sample.txt:
    the models are scored on that file and must not have seen it.
    """
    with tempfile.TemporaryDirectory() as tmp:
        books = load_books(deb or fetch_deb(Path(tmp)))
    train_paras, eval_text = split_corpus(books)
    if eval_text != EVAL_SAMPLE.read_text():
        raise SystemExit(f"held-out split differs from {EVAL_SAMPLE}; not training")
    tok = copy_tokenizer(DEMO, out)
    (out / "words.txt").unlink(missing_ok=True)
    return build_stream(train_paras, tok, seed), tok


def train(model, stream, *, minutes: float, lr: float, batch: int, seq_len: int,
          seed: int = 0, loss_extra=None, log_every: int = 25):
    """AdamW on next-token cross-entropy, cosine schedule over a wall-time budget.

    loss_extra(model, x) -> (hidden-free) extra loss term, e.g. a router balance loss;
    when given, the model is called through it: it must return (logits, extra).
    """
    import mlx.core as mx
    import mlx.optimizers as optim
    import numpy as np
    from mlx import nn

    mx.random.seed(seed)
    rng = np.random.default_rng(seed)
    opt = optim.AdamW(learning_rate=lr, weight_decay=0.05, betas=(0.9, 0.95))

    def loss_fn(model, x, y):
        if loss_extra is None:
            return nn.losses.cross_entropy(model(x), y, reduction="mean"), mx.array(0.0)
        logits, extra = loss_extra(model, x)
        ce = nn.losses.cross_entropy(logits, y, reduction="mean")
        return ce + extra, ce

    loss_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, opt.state]

    def step(x, y):
        (loss, ce), grads = loss_and_grad(model, x, y)
        grads, _ = optim.clip_grad_norm(grads, 1.0)
        opt.update(model, grads)
        return loss, ce

    step = mx.compile(step, inputs=state, outputs=state)

    def next_batch():
        starts = rng.integers(0, len(stream) - seq_len - 1, size=batch)
        chunk = np.stack([stream[s : s + seq_len + 1] for s in starts])
        return mx.array(chunk[:, :-1]), mx.array(chunk[:, 1:])

    budget, t0, it, avg, log = minutes * 60.0, time.time(), 0, None, []
    warmup = 30
    while (elapsed := time.time() - t0) < budget:
        progress = elapsed / budget
        cur = lr * min(1.0, (it + 1) / warmup)
        cur *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
        opt.learning_rate = cur
        x, y = next_batch()
        loss, ce = step(x, y)
        mx.eval(loss, ce, model.parameters(), opt.state)
        lv = (ce if loss_extra is not None else loss).item()
        avg = lv if avg is None else 0.98 * avg + 0.02 * lv
        if it % log_every == 0:
            tps = (it + 1) * batch * seq_len / (time.time() - t0)
            extra = f"  total {loss.item():.3f}" if loss_extra is not None else ""
            print(f"step {it:5d}  ce {lv:.3f}  avg {avg:.3f}{extra}  lr {cur:.2e}  "
                  f"{time.time() - t0:6.0f}s  tok/s {tps:.0f}", flush=True)
            log.append((it, round(avg, 4)))
        it += 1
    log.append((it, round(avg, 4)))
    wall = time.time() - t0
    print(f"trained {it} steps, {it * batch * seq_len:,} tokens in {wall:.0f}s; "
          f"smoothed loss {avg:.3f}", flush=True)
    return {"steps": it, "tokens": it * batch * seq_len, "wall_s": round(wall),
            "final_smoothed_loss": round(avg, 4), "loss": log}


def write_folder(out: Path, config: dict, weights: dict, info: dict) -> None:
    """An HF-style folder: config.json, model.safetensors (bf16), tokenizer, generation config."""
    import mlx.core as mx

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    shutil.copy(DEMO / "generation_config.json", out / "generation_config.json")
    for name in TOKENIZER_FILES:
        shutil.copy(DEMO / name, out / name)
    bf16 = {k: v.astype(mx.bfloat16) for k, v in weights.items()}
    mx.save_safetensors(str(out / "model.safetensors"), bf16, metadata={"format": "pt"})
    (out / "build_info.json").write_text(json.dumps(info, indent=1) + "\n")


def heldout_perplexity(folder: Path, text: str | None = None, seq_len: int = 512) -> float:
    """Per-token perplexity of the reloaded (mlx_lm.load) folder on the held-out text, float32."""
    import mlx.core as mx
    from mlx import nn
    from mlx_lm import load

    model, tok = load(str(folder))
    model.set_dtype(mx.float32)
    ids = tok.encode(text if text is not None else EVAL_SAMPLE.read_text())
    nll, n = 0.0, 0
    for s in range(0, len(ids) - 1, seq_len):
        chunk = ids[s : s + seq_len + 1]
        if len(chunk) < 2:
            break
        x = mx.array(chunk[:-1])[None]
        y = mx.array(chunk[1:])[None]
        loss = nn.losses.cross_entropy(model(x), y, reduction="sum")
        nll += loss.item()
        n += len(chunk) - 1
    return math.exp(nll / n)
