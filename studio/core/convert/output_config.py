"""The output's config.json and the non-weight files copied beside it.

mlx-lm's `load_model` reads the top-level `"quantization"`: a default
`{"group_size", "bits", "mode"}` plus, per module path, either a dict (a
different quantization) or `false` (leave the module as it is). Its
class_predicate checks `if p in config["quantization"]: return
config["quantization"][p]` first, so these entries decide. A copy goes under
`"quantization_config"`, as mlx-lm's own quantize_model writes it.
"""

from __future__ import annotations

import copy
import shutil
from collections import Counter
from pathlib import Path

from studio.core.policy.plan import Plan
from studio.core.policy.bit_policy import OWN_POLICY_FILE

# Files that are weights or describe them; everything else non-weight is copied.
_SKIP = {"config.json", "model.safetensors.index.json", "README.md", OWN_POLICY_FILE}
# Never ".py": the output must load with plain mlx-lm, which runs no code from a model folder.
_COPY_SUFFIXES = (".json", ".jinja", ".txt", ".model", ".tiktoken")


def quantization_entry(plan: Plan) -> dict | None:
    """The `"quantization"` dict for config.json, or None when nothing is quantized."""
    counts: Counter = Counter()
    elements: Counter = Counter()
    for unit, decision in plan.rows():
        if decision.action == "quantize":
            key = (decision.group_size, decision.bits, decision.mode)
            counts[key] += 1
            elements[key] += unit.elements
    if not counts:
        return None
    group_size, bits, mode = max(counts, key=lambda k: (counts[k], elements[k]))
    out: dict = {"group_size": group_size, "bits": bits, "mode": mode}
    for unit, decision in plan.rows():
        if unit.kind != "module":
            continue
        if decision.action == "quantize":
            if (decision.group_size, decision.bits, decision.mode) != (group_size, bits, mode):
                out[unit.path] = {"group_size": decision.group_size, "bits": decision.bits, "mode": decision.mode}
        elif decision.action == "keep":
            out[unit.path] = False
    return out


def output_config(plan: Plan) -> dict:
    """The source config without its source quantization, with the output's."""
    config = copy.deepcopy(plan.inventory.config)
    for holder in (config, config.get("text_config")):
        if isinstance(holder, dict):
            holder.pop("quantization_config", None)
            holder.pop("quantization", None)
            holder.pop("auto_map", None)  # points at .py files the output does not carry
    quantization = quantization_entry(plan)
    if quantization is not None:
        config["quantization"] = quantization
        config["quantization_config"] = copy.deepcopy(quantization)
    return config


def extra_files(root: Path) -> list[Path]:
    """Tokenizer, chat template, generation config and other non-weight files of the source."""
    out = []
    for path in sorted(Path(root).iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.name in _SKIP:  # is_file: no pipes, no folders
            continue
        if path.name.endswith(".safetensors") or path.name.endswith(".safetensors.index.json"):
            continue
        if path.suffix in _COPY_SUFFIXES or path.name == "tokenizer.model":
            out.append(path)
    return out


def copy_extra_files(root: Path, dest: Path) -> list[str]:
    names = []
    for path in extra_files(root):
        shutil.copyfile(path, dest / path.name)
        names.append(path.name)
    return names
