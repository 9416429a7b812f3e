"""A loaded model's quantization in a few words: its policy, its mix of bit widths and its bpw.

The config's top-level ``"quantization"`` entry is only the default: a
Config-I output is mostly 2- and 3-bit with 4- and 8-bit modules that the
per-module entries override, so reading ``bits`` there would call it "8-bit"
or "4-bit". This reads the modules MLX actually built instead.
"""

from __future__ import annotations

import json
from pathlib import Path

from studio.core.policy.bit_policy import OWN_POLICY_FILE


def policy_name(folder: str | Path) -> str | None:
    """The name of the studio policy that made ``folder`` (its configi_policy.json), if any."""
    try:
        data = json.loads((Path(folder) / OWN_POLICY_FILE).read_text())
    except (OSError, ValueError):
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return str(name) if name else None


def quantized_mix(model) -> tuple[list[int], float] | None:
    """(bit widths present, bits per weight over the quantized weights), or None if nothing is quantized.

    bpw counts what the quantized weights occupy (packed values, scales and
    biases) per weight they stand for, as the studio's estimate and model cards do.
    """
    from studio.core.runtime.compute_path import quantized_classes

    classes = quantized_classes()
    bits, stored, weights = set(), 0, 0
    for _, module in model.named_modules():
        if not isinstance(module, classes):
            continue
        bits.add(int(module.bits))
        packed = module.weight
        stored += packed.nbytes + module.scales.nbytes
        biases = module.get("biases")
        if biases is not None:
            stored += biases.nbytes
        weights += packed.size * packed.dtype.size * 8 // module.bits
    if not weights:
        return None
    return sorted(bits), 8 * stored / weights


def describe(model, folder: str | Path | None = None) -> str:
    """"Config-I: 2/3/4/8-bit, 3.10 bpw", "4-bit, 4.50 bpw" or "unquantized"."""
    mix = quantized_mix(model)
    if mix is None:
        return "unquantized"
    bits, bpw = mix
    text = f"{'/'.join(map(str, bits))}-bit, {bpw:.2f} bpw"
    name = policy_name(folder) if folder is not None else None
    return f"{name}: {text}" if name else text
