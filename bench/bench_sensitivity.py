"""Does the sensitivity predict the damage? Predicted against measured final KL on mixed policies.

On the demo model (or MODEL): one calibration pass measures, per cell and bit
width, both the layer-local measure the knapsack used before (`output_error`:
relative squared change of the layer's output; a policy's score is their sum)
and the propagation-aware sensitivity (`sensitivity`: nats of final KL; a
policy's prediction is their sum). Then for each of a handful of mixed policies
(presets, random per-cell bits, and the knapsack's fits to one budget by each
measure) it quantizes the source model's weights in memory as
`convert --calibrate` writes them (the same calibrated quantizer, GPTQ where
the pass kept a Hessian) and measures the mean KL of the next-token
distributions against the float model on the held-out evaluation text, in
float32. Prints each policy's figures and the correlation of predicted with
measured (Pearson on the values and on their logs, Spearman on the ranks),
old measure vs new.

    python bench/bench_sensitivity.py [MODEL] [--random 8] [--max-tokens 2048] [--sequences N]
"""

import argparse
import random
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.core.budget.propose import affine_cells, propose  # noqa: E402
from studio.core.bundled import demo_model_path  # noqa: E402
from studio.core.calibration.calibrate import calibrate  # noqa: E402
from studio.core.calibration.sensitivity import round_trip  # noqa: E402
from studio.core.formatting import table  # noqa: E402
from studio.core.policy.bit_policy import Quantize  # noqa: E402
from studio.core.policy.grid_paint import apply_stroke  # noqa: E402
from studio.core.project import Project  # noqa: E402

BITS = (2, 3, 4, 8)  # the random policies' choices per cell; the pass measures these


def predicted(project: Project, per_cell: dict) -> float:
    """Sum over the policy's affine-quantized cells of their figure at the bits the policy gives them."""
    total = 0.0
    for cell, members in affine_cells(project).items():
        bits = project.plan.decisions[members[0]].bits
        total += per_cell.get(cell, {}).get(bits, 0.0)
    return total


def random_policy(source: Path, seed: int):
    project = Project.open(source, "config-i")
    rng = random.Random(seed)
    cells = affine_cells(project)
    group = {cell: project.plan.decisions[m[0]].group_size for cell, m in cells.items()}
    stroke = {cell: Quantize(rng.choice(BITS), group[cell], "affine") for cell in cells}
    painted = apply_stroke(project.policy, stroke, project.grid, note=f"random {seed}")
    return painted.with_rules(painted.rules, name=f"random-{seed}")


def _model_and_text(source: Path, max_tokens: int, context: int):
    """The float32 source model (mlx-lm's) and the held-out evaluation text as [windows, context] tokens."""
    from mlx_lm.utils import load_model

    from studio.core.evaluate.inputs import encode, load_tokenizer, read_text

    model, _ = load_model(source)
    model.set_dtype(mx.float32)
    text, _ = read_text(None)
    ids = encode(load_tokenizer(source), text, max_tokens)
    windows = len(ids) // context
    return model, mx.array(np.asarray(ids[:windows * context], dtype=np.int32).reshape(windows, context))


def spearman(a, b) -> float:
    ra = np.argsort(np.argsort(a))
    rb = np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default=None)
    parser.add_argument("--random", type=int, default=8, help="random mixed policies (per-cell bits from 2, 3, 4, 8)")
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--sequences", type=int, default=None, help="calibration sequences (default the studio's)")
    args = parser.parse_args()
    source = Path(args.model or demo_model_path())
    stats = calibrate(Project.open(source, "config-i"), sequences=args.sequences, bits_options=BITS,
                      progress=lambda p: print(f"calibrating: {p.label}", file=sys.stderr))
    print(f"calibration: {stats.tokens:,} tokens of {stats.corpus_label}, {stats.seconds:.0f} s", file=sys.stderr)

    projects = [Project.open(source, p) for p in ("config-i", "uniform-2bit", "uniform-4bit", "uniform-8bit")]
    for seed in range(args.random):
        project = Project.open(source, "config-i")
        project.set_policy(random_policy(source, seed))
        projects.append(project)
    # The knapsack's choice at one budget (uniform 3-bit's bytes) by each measure.
    budget = Project.open(source, "uniform-2bit").estimate.total_bytes * 3 // 2
    for name, table_ in (("fit by output_error", stats.output_error), ("fit by sensitivity", stats.sensitivity)):
        project = Project.open(source, "config-i")
        fitted = propose(project, budget, table_, options=BITS).policy
        project.set_policy(fitted.with_rules(fitted.rules, name=name))
        projects.append(project)

    model, tokens = _model_and_text(source, args.max_tokens, args.context)
    reference = nn.log_softmax(model(tokens))
    modules = dict(tree_flatten(model.leaf_modules(), is_leaf=nn.Module.is_module))
    originals = {path: m.weight for path, m in modules.items() if hasattr(m, "weight")}
    rows, old, new, measured = [], [], [], []
    quantized = {}  # (unit path, bits) -> its weights as calibrated conversion writes them; policies share them

    def values(unit, bits, group_size):
        key = (unit.path, bits)
        if key not in quantized:
            w = originals[unit.path]
            importance = stats.importance(unit.path)
            if importance is None:
                importance = mx.ones((w.shape[-1],), dtype=mx.float32)
            quantized[key] = round_trip(w, group_size, bits, importance, mx.bfloat16, stats.hessian(unit.path))
            mx.eval(quantized[key])
        return quantized[key]

    for project in projects:
        for path, weight in originals.items():
            modules[path].weight = weight
        for cell, members in affine_cells(project).items():
            bits = project.plan.decisions[members[0]].bits
            for i in members:
                unit = project.units[i]
                modules[unit.path].weight = values(unit, bits, project.plan.decisions[i].group_size)
        out = nn.log_softmax(model(tokens))
        kl = mx.mean(mx.sum(mx.exp(reference) * (reference - out), axis=-1)).item()
        old.append(predicted(project, stats.output_error))
        new.append(predicted(project, stats.sensitivity))
        measured.append(kl)
        rows.append([project.policy.name, f"{project.estimate.total_bytes:,}", f"{old[-1]:.4g}",
                     f"{new[-1]:.4f}", f"{kl:.4f}", f"{new[-1] / kl:.2f}"])
        print(f"{project.policy.name}: measured KL {kl:.4f}", file=sys.stderr)
    print(f"{source.name}: held-out text ({tokens.size:,} tokens, windows of {args.context}); calibration "
          f"{stats.tokens:,} tokens of {stats.corpus_label}; weights as calibrated conversion writes them\n")
    print(table(["policy", "bytes", "old: sum output_error", "new: predicted KL", "measured KL", "new / measured"],
                rows, right={1, 2, 3, 4, 5}))
    old, new, measured = np.array(old), np.array(new), np.array(measured)
    print()
    print(f"Pearson  old {np.corrcoef(old, measured)[0, 1]:.3f}   new {np.corrcoef(new, measured)[0, 1]:.3f}")
    print(f"Spearman old {spearman(old, measured):.3f}   new {spearman(new, measured):.3f}")
    print(f"Pearson of logs  old {np.corrcoef(np.log(old), np.log(measured))[0, 1]:.3f}   "
          f"new {np.corrcoef(np.log(new), np.log(measured))[0, 1]:.3f}")


if __name__ == "__main__":
    main()
