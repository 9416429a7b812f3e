"""Writing the trained model in the Hugging Face layout, and checking it reloads with mlx-lm."""

from __future__ import annotations

import json
import math
from pathlib import Path

from demo_model.architecture import model_config, to_hf_weights

def write_outputs(
    model, tok, out: Path, tc: dict, log, args, train_tokens: int, wall: float
):
    import mlx.core as mx
    from mlx.utils import tree_flatten

    cfg = model_config(tc)
    eos = tok.token_to_id("<|im_end|>")
    eot = tok.token_to_id("<|endoftext|>")
    cfg["eos_token_id"] = eos
    cfg["text_config"]["eos_token_id"] = eos
    cfg["text_config"]["pad_token_id"] = eot
    cfg["bos_token_id"] = eot
    cfg["text_config"]["bos_token_id"] = eot
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (out / "generation_config.json").write_text(
        json.dumps(
            {
                "eos_token_id": [eos, eot],
                "pad_token_id": eot,
                "do_sample": True,
                "temperature": 1.0,
                "top_p": 0.95,
            },
            indent=2,
        )
        + "\n"
    )
    weights = to_hf_weights(model)
    mx.save_safetensors(
        str(out / "model.safetensors"), weights, metadata={"format": "pt"}
    )
    n_params = sum(v.size for _, v in tree_flatten(model.parameters()))
    (out / "training_log.json").write_text(
        json.dumps(
            {
                "parameters": n_params,
                "train_tokens_seen": train_tokens,
                "wall_seconds": round(wall),
                "seq_len": args.seq_len,
                "batch": args.batch,
                "lr": args.lr,
                "seed": args.seed,
                "loss": [[s, round(l, 4)] for s, l in log],
            }
        )
        + "\n"
    )


def verify(out: Path, eval_text: str, prompts: list[str]):
    """Reload with mlx_lm.load, cast to float32, generate, and score held-out text."""
    import mlx.core as mx
    from mlx import nn
    from mlx_lm import generate, load
    from mlx_lm.sample_utils import make_sampler

    model, tok = load(str(out))
    model.set_dtype(mx.float32)
    samples = []
    for p in prompts:
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True
        )
        text = generate(model, tok, prompt, max_tokens=80, sampler=make_sampler(0.0))
        samples.append((p, text))
        print(f"\n[user] {p}\n[assistant] {text}", flush=True)
    mx.random.seed(1)
    sampled = []
    for p in [
        "Tell me about the young lady.",
        "Write something about love and marriage.",
    ]:
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True
        )
        sampler = make_sampler(0.7, top_p=0.95)
        text = generate(model, tok, prompt, max_tokens=80, sampler=sampler)
        sampled.append((p, text))
        print(f"\n[user] {p}\n[assistant, sampled] {text}", flush=True)
    ids = tok.encode(eval_text)
    total, count = 0.0, 0
    for s in range(0, len(ids) - 1, 256):
        chunk = ids[s : s + 257]
        if len(chunk) < 2:
            break
        x = mx.array(chunk[:-1])[None]
        y = mx.array(chunk[1:])[None]
        total += nn.losses.cross_entropy(model(x), y, reduction="sum").item()
        count += len(chunk) - 1
    ppl = math.exp(total / count)
    print(f"held-out perplexity: {ppl:.2f} over {count} tokens", flush=True)
    return samples, sampled, ppl
