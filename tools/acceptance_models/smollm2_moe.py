"""Sparse-upcycle the real SmolLM2-135M (see smollm2_from_pypi.py) into a Mixtral MoE.

    python tools/acceptance_models/smollm2_moe.py --dense /work/wt/_models/smollm2 \\
        --out /work/wt/_models/smollm2_moe [--experts 8] [--top-k 2] [--noise 0.0]

Every expert starts as a copy of the layer's MLP (sparse upcycling, Komatsuzaki et al.
2022) and the router is a random projection. Mixtral renormalises the top-k router
scores to sum to one, so with exact copies the MoE computes exactly what the dense model
does: real pretrained quality, real routing (each expert sees a different share of the
tokens, so per-expert calibration statistics differ), no training needed. ``--noise``
perturbs each expert (relative to the weight's std) when distinct experts are wanted.

Writes HF Mixtral names (block_sparse_moe.experts.E.{w1,w2,w3}, block_sparse_moe.gate),
bf16. A measurement model for issue 17; not used by tests or CI.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def main() -> None:
    import mlx.core as mx

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dense", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--noise", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; choose a new folder")

    cfg = json.loads((args.dense / "config.json").read_text())
    if cfg["model_type"] != "llama":
        raise SystemExit("expects a Llama-architecture dense model")
    mx.random.seed(args.seed)
    weights = {}
    for shard in sorted(args.dense.glob("*.safetensors")):
        weights.update(mx.load(str(shard)))
    out = {}
    mlp = {"gate_proj": "w1", "down_proj": "w2", "up_proj": "w3"}
    for name, w in weights.items():
        parts = name.split(".")
        if len(parts) > 4 and parts[3] == "mlp":
            prefix, proj = ".".join(parts[:3]), parts[4]
            for e in range(args.experts):
                we = w
                if args.noise:
                    std = mx.std(w.astype(mx.float32))
                    we = (w.astype(mx.float32) + args.noise * std * mx.random.normal(w.shape)).astype(w.dtype)
                out[f"{prefix}.block_sparse_moe.experts.{e}.{mlp[proj]}.weight"] = we
            if proj == "gate_proj":
                router = mx.random.normal((args.experts, cfg["hidden_size"])) * cfg["hidden_size"] ** -0.5
                out[f"{prefix}.block_sparse_moe.gate.weight"] = router.astype(w.dtype)
        else:
            out[name] = w
    mx.eval(out)

    args.out.mkdir(parents=True)
    mx.save_safetensors(str(args.out / "model.safetensors"), out, metadata={"format": "pt"})
    moe_cfg = dict(cfg, architectures=["MixtralForCausalLM"], model_type="mixtral",
                   num_local_experts=args.experts, num_experts_per_tok=args.top_k)
    (args.out / "config.json").write_text(json.dumps(moe_cfg, indent=2) + "\n")
    for f in args.dense.iterdir():
        if f.name != "config.json" and not f.name.endswith(".safetensors"):
            shutil.copy(f, args.out / f.name)
    print(f"wrote {args.out}: {len(out)} tensors, {args.experts} experts (top-{args.top_k}) a layer")


if __name__ == "__main__":
    main()
