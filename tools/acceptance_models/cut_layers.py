"""Cut a Hugging Face style folder to its first N decoder layers, same weights (a header copy of the rest).

    python tools/acceptance_models/cut_layers.py SOURCE OUT N

The acceptance tables of issue 17 score SmolLM2 and its upcycled MoE cut to
their first 8 layers: every method (the studio's and mlx-lm's) then runs in
minutes on a 2-core CPU, on real pretrained weights. Scores compare each
quantized cut with the float cut, so the cut's own (poor) language modelling
does not enter them.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import mlx.core as mx


def cut(source: Path, out: Path, layers: int) -> None:
    if out.exists():
        raise SystemExit(f"{out} exists; remove it or choose another folder.")
    out.mkdir(parents=True)
    weights = {}
    for shard in sorted(source.glob("*.safetensors")):
        for name, value in mx.load(str(shard)).items():
            found = re.search(r"\.layers\.(\d+)\.", name)
            if found is None or int(found.group(1)) < layers:
                weights[name] = value
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "pt"})
    config = json.loads((source / "config.json").read_text())
    config["num_hidden_layers"] = layers
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for f in source.iterdir():
        if f.is_file() and f.suffix != ".safetensors" and f.name not in ("config.json", "model.safetensors.index.json"):
            shutil.copy(f, out / f.name)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    cut(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
