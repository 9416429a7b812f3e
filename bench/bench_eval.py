"""Evaluation time per 1,000 tokens: MLX's quantized kernels against the CPU path (dequantized float32).

Two models, each converted by the studio and evaluated against its source in
this one run, both compute paths side by side:

- the bundled demo model (MiniMax-M3 architecture, MoE) under Config-I;
- a dense llama made here (random bf16 weights, the demo's tokenizer;
  ``--hidden``/``--layers`` set its size) under uniform 4-bit.

Each cell is one ``evaluate(..., mode="together")`` over the same tokens of the
bundled sample, loading included: wall seconds and this process's CPU seconds
per 1,000 scored tokens (CPU seconds are steadier when other processes share
the machine), the ratio of the two paths, and the figures each path gives.

    .venv/bin/python bench/bench_eval.py [--tokens 1024] [--context 256]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from studio.core.bundled import demo_model_path  # noqa: E402
from studio.core.runtime.compute_path import device_name  # noqa: E402
from studio.core.convert import convert  # noqa: E402
from studio.core.evaluate.run import evaluate  # noqa: E402
from studio.core.formatting import table  # noqa: E402
from studio.core.project import Project  # noqa: E402


def make_dense_llama(folder: Path, hidden: int, layers: int) -> Path:
    """A bf16 llama of the given size with the demo's tokenizer, in Hugging Face layout."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    demo = demo_model_path()
    vocab = json.loads((demo / "config.json").read_text())["text_config"]["vocab_size"]
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": hidden,
              "num_hidden_layers": layers, "intermediate_size": hidden * 3, "num_attention_heads": hidden // 64,
              "num_key_value_heads": max(hidden // 256, 1), "rms_norm_eps": 1e-5, "vocab_size": vocab,
              "max_position_embeddings": 4096, "rope_theta": 10000.0, "tie_word_embeddings": False,
              "torch_dtype": "bfloat16", "bos_token_id": 0, "eos_token_id": 2}
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    model.set_dtype(mx.bfloat16)
    folder.mkdir(parents=True)
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())),
                        metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(demo / name, folder / name)
    return folder


def measure(label: str, source: Path, policy: str, work: Path, tokens: int, context: int) -> list[list[str]]:
    out = work / f"{source.name}-{policy}"
    convert(Project.open(source, policy), out)
    runs, cpu = {}, {}
    for compute in ("quantized", "dequantized"):
        started = time.process_time()
        runs[compute] = evaluate(out, source, compute=compute, mode="together", max_tokens=tokens,
                                 context=context, cache_dir=work / "cache")
        cpu[compute] = time.process_time() - started
        r = runs[compute]
        print(f"  {label}, {compute}: {r.seconds:.1f} s wall, {cpu[compute]:.1f} s CPU for {r.tokens:,} tokens "
              f"({r.compute_path})", flush=True)
    q, d = runs["quantized"], runs["dequantized"]
    wall = {k: 1000 * r.seconds / r.tokens for k, r in runs.items()}
    per_cpu = {k: 1000 * cpu[k] / r.tokens for k, r in runs.items()}
    return [[label, policy, f"{wall['quantized']:.1f} / {per_cpu['quantized']:.1f}",
             f"{wall['dequantized']:.1f} / {per_cpu['dequantized']:.1f}",
             f"{wall['quantized'] / wall['dequantized']:.1f}x / {per_cpu['quantized'] / per_cpu['dequantized']:.1f}x",
             f"{d.kld_mean:.4f} / {q.kld_mean:.4f}", f"{d.top1_agreement:.1%} / {q.top1_agreement:.1%}",
             f"{d.ppl:.2f} / {q.ppl:.2f}"]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=1024, help="tokens scored per evaluation (default 1024)")
    parser.add_argument("--context", type=int, default=256, help="window length (default 256)")
    parser.add_argument("--hidden", type=int, default=512, help="dense llama hidden size (default 512)")
    parser.add_argument("--layers", type=int, default=8, help="dense llama layers (default 8)")
    args = parser.parse_args(argv)
    print(f"MLX device: {device_name()}; {args.tokens} tokens, windows of {args.context}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dense = make_dense_llama(work / f"llama-{args.hidden}x{args.layers}", args.hidden, args.layers)
        rows = measure("demo (MoE, 7.5M)", demo_model_path(), "config-i", work, args.tokens, args.context)
        rows += measure(f"dense llama {args.hidden}x{args.layers}", dense, "uniform-4bit", work,
                        args.tokens, args.context)
    print()
    print(table(["model", "policy", "kernels s/1k tok (wall/CPU)", "dequantized s/1k tok", "speed-up",
                 "KL deq / kernels", "top-1 deq / kernels", "ppl deq / kernels"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
