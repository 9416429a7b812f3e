"""Build the dense acceptance model: a small Llama (``model_type`` "llama") trained on
Jane Austen with MLX on the CPU, written as a Hugging Face folder that mlx-lm loads.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 \\
    nice -n 10 python tools/acceptance_models/train_dense.py --out /work/wt/_models/dense \\
        --minutes 20

Same text, held-out split and tokenizer as the bundled demo model (see
tools/train_demo_model.py and studio/resources/demo_model/README.md): the Debian
package r-cran-janeaustenr, the end of "Persuasion" held out as
studio/resources/eval_sample.txt. Weights are bf16 in one model.safetensors with HF
Llama names (model.layers.N.self_attn.q_proj.weight, mlp.gate_proj ..., lm_head), so
the studio and mlx-lm treat it as any source checkpoint. Not run by tests or CI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import heldout_perplexity, train, training_stream, write_folder  # noqa: E402


def llama_config(hidden: int, layers: int, intermediate: int, heads: int, kv_heads: int) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 4096,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": hidden // heads,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "hidden_act": "silu",
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "torch_dtype": "bfloat16",
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--deb", type=Path, help="a local r-cran-janeaustenr .deb")
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models.llama import Model, ModelArgs

    mx.set_default_device(mx.cpu)
    args.out.mkdir(parents=True, exist_ok=True)
    stream, _ = training_stream(args.out, args.deb, args.seed)
    cfg = llama_config(args.hidden, args.layers, args.intermediate, args.heads, args.kv_heads)
    mx.random.seed(args.seed)
    model = Model(ModelArgs.from_dict(cfg))
    weights = dict(tree_flatten(model.parameters()))
    n_params = sum(v.size for v in weights.values())
    print(f"parameters: {n_params:,}; training tokens available: {len(stream):,}", flush=True)
    info = train(model, stream, minutes=args.minutes, lr=args.lr, batch=args.batch,
                 seq_len=args.seq_len, seed=args.seed)
    weights = dict(tree_flatten(model.parameters()))
    info.update(parameters=n_params, batch=args.batch, seq_len=args.seq_len, lr=args.lr,
                built_by="tools/acceptance_models/train_dense.py")
    write_folder(args.out, cfg, weights, info)
    ppl = heldout_perplexity(args.out)
    info["heldout_ppl"] = round(ppl, 3)
    write_folder(args.out, cfg, weights, info)
    print(f"wrote {args.out}: {n_params:,} parameters, held-out perplexity {ppl:.2f}")


if __name__ == "__main__":
    main()
