"""A model's tensors checked against each other and against config.json, before any plan.

What a header alone cannot show: an index that disagrees with the shards, scale
tensors whose shape does not fit their weight (transposed FP8 block scales,
zero-width MLX scales, an MLX source whose config says 3-bit g32 while its
tensors are 8-bit g64), experts missing from a layer or of different shapes,
a layer that lacks a tensor every other layer of its kind has, and a layer
count that does not match the weights. Each refusal is one sentence.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict

from studio.core.errors import StudioError
from studio.core.defaults import MODES, default_group_size

FP8_BLOCK = 128
_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")
_EXPERT = re.compile(r"\.experts\.(\d+)\.")
_MTP_MARKS = (".enorm.", ".hnorm.", ".eh_proj.", ".shared_head.", "mtp")
_EXPERT_COUNT_FIELDS = ("num_local_experts", "n_routed_experts", "num_experts")


def check_index_matches(weight_map: dict, raw: dict, index_name: str) -> None:
    """Every tensor the index names is in the shard it names, and the index names every tensor."""
    for name, shard in weight_map.items():
        entry = raw.get(name)
        if entry is None:
            raise StudioError(f"{index_name} lists tensor {name!r} in {shard}, but no shard holds it.")
        if entry.shard != shard:
            raise StudioError(f"{index_name} puts tensor {name!r} in {shard}, but it is in {entry.shard}.")
    if len(raw) != len(weight_map):
        missing = next(n for n in raw if n not in weight_map)
        raise StudioError(f"{index_name} does not list tensor {missing!r} that {raw[missing].shard} holds.")


def mlx_quant(name: str, data, scales, biases, settings: dict) -> tuple[dict, tuple[int, ...]]:
    """The (bits, group_size, mode) of an MLX-quantized weight and its logical shape, from its
    tensors, which must agree with what config.json says about them."""
    mode = settings.get("mode", "affine")
    group = settings.get("group_size") or default_group_size(mode)
    if len(data.shape) < 2 or scales.shape[:-1] != data.shape[:-1] or not scales.shape[-1]:
        raise StudioError(f"{name}: its scales {list(scales.shape)} do not fit the packed weight "
                          f"{list(data.shape)}.")
    inputs = scales.shape[-1] * group
    packed_bits = data.shape[-1] * 32
    bits = packed_bits // inputs
    limits = MODES.get(mode, MODES["affine"])
    if packed_bits % inputs or bits not in limits["bits"] or group not in limits["group_sizes"] or \
            ("bits" in settings and settings["bits"] != bits):
        said = f"{settings.get('bits', '?')}-bit g{group} {mode}"
        raise StudioError(f"{name}: config.json says {said}, but the packed weight {list(data.shape)} and its "
                          f"scales {list(scales.shape)} do not match that.")
    if mode == "affine" and (biases is None or biases.shape != scales.shape):
        raise StudioError(f"{name}: an affine-quantized weight needs biases shaped like its scales.")
    return {"bits": bits, "group_size": group, "mode": mode}, (*data.shape[:-1], inputs)


def check_fp8_scales(name: str, data, scale, block: int = FP8_BLOCK) -> str:
    """"fp8" (block scales) or "mxfp8" (one exponent per 32 values), if the scale fits the weight."""
    if data.dtype != "F8_E4M3":
        raise StudioError(f"{name}: {data.dtype} weights are not supported; FP8 sources must be e4m3.")
    if scale.dtype in ("U8", "F8_E8M0"):
        if scale.shape[:-1] != data.shape[:-1] or scale.shape[-1] * 32 != data.shape[-1]:
            raise StudioError(f"{name}: its MXFP8 scales {list(scale.shape)} do not fit the weight "
                              f"{list(data.shape)} (one per 32 values along the last axis).")
        return "mxfp8"
    want = tuple(math.ceil(d / block) for d in data.shape)
    if len(data.shape) != 2 or scale.shape != want or scale.dtype not in ("F32", "BF16", "F16"):
        raise StudioError(f"{name}: its block scales are {scale.dtype} {list(scale.shape)}; a weight of "
                          f"{list(data.shape)} needs float {list(want)} ({block}x{block} blocks).")
    return "fp8"


def check_expert_stack(path: str, members: list[tuple[int, str]], by_name: dict, expected: int | None) -> None:
    """The experts of one projection of one layer: numbered 0..E-1, E as the config says, one shape."""
    indices = [i for i, _ in members]
    if indices != list(range(len(indices))):
        gap = next(i for i, n in enumerate(indices) if i != n) if indices[0] == 0 else 0
        raise StudioError(f"{path}: expert {gap} is missing (the experts present are numbered "
                          f"{indices[0]}-{indices[-1]}, {len(indices)} of them).")
    if expected is not None and len(members) != expected:
        raise StudioError(f"{path}: {len(members)} experts, but config.json says {expected}.")
    first = by_name[members[0][1]]
    for _, name in members[1:]:
        other = by_name[name]
        if other.shape != first.shape or other.dtype != first.dtype or other.encoding != first.encoding:
            raise StudioError(f"{path}: experts differ in shape or dtype ({members[0][1]} is "
                              f"{list(first.shape)} {first.dtype}, {name} is {list(other.shape)} {other.dtype}).")


def expected_experts(text_config: dict) -> int | None:
    for field in _EXPERT_COUNT_FIELDS:
        if text_config.get(field):
            return text_config[field]
    return None


def _pattern(name: str) -> str:
    return _EXPERT.sub(".experts.E.", _LAYER.sub(lambda m: m.group(0).replace(m.group(1), "N"), name, count=1))


def check_layers(tensors, text_config: dict) -> None:
    """The weights hold layers 0..num_hidden_layers-1 (plus any multi-token-prediction layers after
    them), and no layer lacks a tensor that another layer of the same kind has."""
    layers = int(text_config["num_hidden_layers"])
    by_layer: dict[int, set[str]] = defaultdict(set)
    for tensor in tensors:
        match = _LAYER.search(tensor.name)
        if match and not tensor.name.startswith(("vision", "visual", "model.vision", "multi_modal")):
            by_layer[int(match.group(1))].add(_pattern(tensor.name))
    if not by_layer:
        return  # a model without numbered layers (rare); nothing to compare
    missing = [n for n in range(layers) if n not in by_layer]
    if missing:
        present = sorted(by_layer)
        raise StudioError(f"config.json says {layers:,} layers, but the weights have no tensors for layer "
                          f"{missing[0]} (they hold layers {present[0]}-{present[-1]}).")
    extra = [n for n in sorted(by_layer) if n >= layers and not any(m in p for p in by_layer[n] for m in _MTP_MARKS)]
    if extra:
        raise StudioError(f"config.json says {layers:,} layer(s), but the weights also hold layer {extra[0]}, which is "
                          "not a multi-token-prediction layer.")
    first_of_kind: dict[frozenset, int] = {}
    for n in range(layers):
        first_of_kind.setdefault(frozenset(by_layer[n]), n)
    if len(first_of_kind) > 256:
        return  # every layer different: nothing to compare against
    for names, n in first_of_kind.items():
        for other, other_n in first_of_kind.items():
            if names < other:  # a strict subset: this layer lacks what a layer like it has
                lacking = sorted(other - names)[0].replace(".N.", f".{n}.", 1)
                raise StudioError(f"layer {n} lacks {lacking} (layer {other_n} has its counterpart); "
                                  "the checkpoint is incomplete.")


def check_embedding(tensors, text_config: dict) -> None:
    """The embedding table's rows and width agree with vocab_size and hidden_size."""
    vocab, hidden = text_config.get("vocab_size"), text_config.get("hidden_size")
    for tensor in tensors:
        if tensor.name.endswith("embed_tokens.weight") and len(tensor.shape) == 2 and "vision" not in tensor.name:
            rows, width = tensor.shape
            if vocab and rows != vocab:
                raise StudioError(f"{tensor.name} has {rows:,} rows, but config.json says vocab_size {vocab:,}.")
            if hidden and width != hidden:
                raise StudioError(f"{tensor.name} is {width:,} wide, but config.json says hidden_size {hidden:,}.")
