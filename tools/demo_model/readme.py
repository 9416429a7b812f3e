"""The demo model's README, filled in from the run."""

from __future__ import annotations

from pathlib import Path

README = """\
# Demo model: a tiny MiniMax-M3 trained on Jane Austen

A small model in the MiniMax-M3 architecture (`model_type` `minimax_m3_vl`,
text only) that ships with Config-I Studio so the app and its tests have a
real source checkpoint to open, convert and chat with offline. It writes
Austen-flavoured English sentences; it is not a useful assistant.

Rebuild it with `python tools/train_demo_model.py --out studio/resources/demo_model
--tokenizer-from studio/resources/demo_model --layers {layers} --hidden {hidden} --minutes {train_minutes}`
(needs `apt-get` access to the Debian archive and about {minutes} minutes of CPU).

## Data

- Package: Debian `r-cran-janeaustenr`, version `1.0.0-1` (Debian main;
  upstream CRAN "janeaustenr" 1.0.0 by Julia Silge).
- Files: `usr/lib/R/site-library/janeaustenr/data/Rdata.rdx` and `Rdata.rdb`
  (R lazy-load data base; read with `tools/rlazyload.py`, no R needed).
- Text: Jane Austen's six novels as transcribed by Project Gutenberg:
  Sense and Sensibility, Pride and Prejudice, Mansfield Park, Emma,
  Northanger Abbey, Persuasion.
- Licence: the novels are in the public domain (published 1811-1817; the
  author died in 1817). The R package's code and Debian packaging are MIT.
- Held out: the last ~45 KB of "Persuasion" (`studio/resources/eval_sample.txt`);
  it is not in the training data.

## Model

| | |
|---|---|
| layers | {layers} (layer 0 dense MLP {dense}, layers 1-{last} MoE) |
| hidden | {hidden}; {heads} query heads and {kv} KV head(s) of {head_dim}; qk-norm; partial RoPE |
| MoE | {experts} experts of {inter}, top-{topk}, sigmoid router with correction bias, one shared expert of {shared} |
| vocab | {vocab} (byte-level BPE trained on the same text) |
| parameters | {params:,} |
| file | `model.safetensors`, {size_mb:.1f} MB: bf16, router `gate` and `e_score_correction_bias` F32 |

Weights use the Hugging Face layout of the real MiniMax-M3 checkpoint
(`language_model.model.layers.N.block_sparse_moe.experts.E.{{w1,w3,w2}}`,
`shared_experts.{{gate,up,down}}_proj`, `mlp.{{gate,up,down}}_proj` on the dense
layer, `language_model.lm_head`), so mlx-lm's `sanitize` and the studio's
converter treat it as a source checkpoint.

## Training

MLX {mlx_version} on CPU (OpenBLAS preloaded, see the script), float32, AdamW (lr {lr}, cosine, weight decay 0.05),
batch {batch} x {seq_len} tokens, {steps} steps ({tokens:,} tokens) in {wall_min:.0f}
minutes (the schedule follows wall time, so a rebuild differs a little;
`--steps N` fixes the step count instead); final training loss {loss:.2f}; held-out perplexity {ppl:.1f}
(per token, on `eval_sample.txt`). About a third of the samples are chat
turns (ChatML-style, `<|im_start|>role ... <|im_end|>`) whose answer is a
paragraph of the novels, so the chat template leads to prose. Experts are
balanced with the auxiliary-loss-free bias update.

On the CPU backend, cast to float32 before generating (MLX's `gather_mm`
runs only in float32 there):

```python
import mlx.core as mx
from mlx_lm import load, generate
model, tok = load("studio/resources/demo_model")
model.set_dtype(mx.float32)
prompt = tok.apply_chat_template([{{"role": "user", "content": "Tell me a story."}}],
                                 add_generation_prompt=True)
print(generate(model, tok, prompt, max_tokens=60))
```

## Samples (greedy, float32)

Greedy decoding falls into loops, as small models do:

{samples}

## Samples (temperature 0.7, top_p 0.95, float32)

{sampled}
"""


def write_readme(out: Path, model, tc: dict, args, log, wall: float, ppl: float, samples, sampled) -> float:
    """Fill README with the run's figures and samples; return the weights' size in MB."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    steps = log[-1][0]
    size_mb = (out / "model.safetensors").stat().st_size / 1e6

    def quote(pairs):
        return "\n\n".join(
            f"> **user:** {p}\n>\n> **assistant:** {t.strip()}" for p, t in pairs
        )

    sample_md = quote(samples)
    sampled_md = quote(sampled)
    (out / "README.md").write_text(
        README.format(
            minutes=round(args.minutes) + 5,
            train_minutes=round(args.minutes),
            layers=tc["num_hidden_layers"],
            last=tc["num_hidden_layers"] - 1,
            dense=tc["dense_intermediate_size"],
            hidden=tc["hidden_size"],
            heads=tc["num_attention_heads"],
            kv=tc["num_key_value_heads"],
            head_dim=tc["head_dim"],
            experts=tc["num_local_experts"],
            inter=tc["intermediate_size"],
            topk=tc["num_experts_per_tok"],
            shared=tc["shared_intermediate_size"],
            vocab=tc["vocab_size"],
            params=sum(v.size for _, v in tree_flatten(model.parameters())),
            size_mb=size_mb,
            mlx_version=mx.__version__,
            lr=args.lr,
            batch=args.batch,
            seq_len=args.seq_len,
            steps=steps,
            tokens=steps * args.batch * args.seq_len,
            wall_min=wall / 60,
            loss=log[-1][1],
            ppl=ppl,
            samples=sample_md,
            sampled=sampled_md,
        )
    )
    return size_mb
