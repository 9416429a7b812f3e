"""Test model factories: tiny real-weight checkpoints and a header-only MiniMax-M3.

    make_tiny_model(arch, path, *, source_format="bf16", seed=0, shards=2) -> Path
    reference_weights(path) -> dict[str, np.ndarray]
    write_m3_replica(path, source_format="mxfp8") -> Path
    param_count(path) -> (tensors, parameters, data bytes)   # headers only
    load_with_mlx_lm(path) -> (model, tokenizer)   # mlx_lm.load + 2 known gaps filled

Tests import this as `from factory import ...` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from . import st
from .replica import write_m3_replica
from .mlx_load import NEEDS_FILL, load_with_mlx_lm
from .tiny import ARCH_BUILDERS
from .tokenizer import write_tokenizer

__all__ = ["ARCHS", "MOE_ARCHS", "FORMATS", "make_tiny_model", "reference_weights",
           "write_m3_replica", "param_count", "load_with_mlx_lm", "NEEDS_FILL", "st"]

ARCHS = tuple(ARCH_BUILDERS)
MOE_ARCHS = ("minimax_m3_vl", "minimax", "qwen3_moe", "deepseek_v3", "mixtral", "gpt_oss")
FORMATS = ("bf16", "f16", "f32", "fp8", "mxfp8")

_FLOAT = {"bf16": "BF16", "f16": "F16", "f32": "F32"}
_TORCH_DTYPE = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}

# The source formats each architecture is officially published in, beyond plain
# floats. Other combinations still work for 2-D linears (fp8 Qwen3 exists, for
# one) except gpt_oss, whose experts are fused 3-D tensors.
OFFICIAL_QUANTIZED = {"minimax": "fp8", "deepseek_v3": "fp8", "minimax_m3_vl": "mxfp8"}

FP8_CONFIG = {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128],
              "activation_scheme": "dynamic"}
MXFP8_CONFIG = {"quant_method": "mxfp8", "fmt": "e4m3", "scale_fmt": "ue8m0",
                "weight_block_size": [1, 32], "activation_scheme": "dynamic"}


def _values(rng: np.random.Generator, shape, kind: str) -> np.ndarray:
    """Deterministic float32 values that look like trained weights, scaled so a
    forward pass stays finite. Linear rows get different magnitudes so FP8 block
    scales and MXFP8 exponents vary across the tensor."""
    if kind == "norm":
        return (1.0 + 0.05 * rng.standard_normal(shape)).astype(np.float32)
    if kind == "gnorm":
        return (0.05 * rng.standard_normal(shape)).astype(np.float32)
    x = 0.02 * rng.standard_normal(shape)
    if kind == "linear":
        x *= np.exp(0.7 * rng.standard_normal((shape[0], 1)))
    return x.astype(np.float32)


def make_tiny_model(arch: str, path: Path, *, source_format: str = "bf16", seed: int = 0,
                    shards: int = 2) -> Path:
    """Write a tiny Hugging Face style checkpoint of `arch` into `path`; return `path`.

    source_format: "bf16" | "f16" | "f32" store every tensor in that float
    (MiniMax routers and routing biases stay F32, as shipped). "fp8": 2-D
    attention/MLP/expert linears as F8_E4M3 plus F32 `weight_scale_inv`
    [ceil(out/128), ceil(in/128)]; the rest BF16. "mxfp8": those linears as
    F8_E4M3 plus U8 E8M0 `weight_scale_inv` [out, in/32]; the rest BF16.
    """
    if arch not in ARCH_BUILDERS:
        raise ValueError(f"unknown arch {arch!r}; one of {', '.join(ARCHS)}")
    if source_format not in FORMATS:
        raise ValueError(f"unknown source_format {source_format!r}; one of {FORMATS}")
    if arch == "gpt_oss" and source_format in ("fp8", "mxfp8"):
        raise ValueError("gpt_oss has no FP8/MXFP8 release; its experts are fused 3-D tensors")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("model*.safetensors*"):  # a rewrite must not mix old shards in
        old.unlink()

    config, specs = ARCH_BUILDERS[arch]()
    base = _FLOAT.get(source_format, "BF16")
    rng = np.random.default_rng(seed)
    tensors: dict[str, st.Tensor] = {}
    for name, shape, kind in specs.items:
        x = _values(rng, shape, kind)
        if kind == "linear" and source_format == "fp8":
            codes, scale = st.fp8_block_quantize(x)
            tensors[name] = st.Tensor("F8_E4M3", shape, codes.tobytes())
            tensors[name + "_scale_inv"] = st.float_tensor(scale, "F32")
        elif kind == "linear" and source_format == "mxfp8":
            codes, exps = st.mxfp8_quantize(x)
            tensors[name] = st.Tensor("F8_E4M3", shape, codes.tobytes())
            tensors[name + "_scale_inv"] = st.Tensor("U8", exps.shape, exps.tobytes())
        else:
            tensors[name] = st.float_tensor(x, "F32" if kind == "f32" else base)
    st.write_sharded(path, tensors, shards)

    ids = write_tokenizer(path)
    eos = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    config["torch_dtype"] = _TORCH_DTYPE[base]
    # The tokenizer has no BOS. Say so: transformers' config classes otherwise
    # default to the real model's BOS id (200034 for MiniMax), outside our vocab.
    config.update(bos_token_id=None, eos_token_id=eos[0], transformers_version="4.57.1")
    if "text_config" in config:
        config["text_config"].update(bos_token_id=None, eos_token_id=eos[0])
    if source_format == "fp8":
        config["quantization_config"] = dict(FP8_CONFIG)
    elif source_format == "mxfp8":
        config["quantization_config"] = dict(MXFP8_CONFIG)
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    gen = {"eos_token_id": eos, "pad_token_id": ids["<|endoftext|>"], "do_sample": True,
           "temperature": 1.0, "top_p": 0.95, "transformers_version": "4.57.1"}
    (path / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    return path


def _quantization_config(path: Path) -> dict:
    config = json.loads((path / "config.json").read_text())
    return config.get("quantization_config") or \
        config.get("text_config", {}).get("quantization_config") or {}


def reference_weights(path: Path) -> dict[str, np.ndarray]:
    """Every stored weight as the exact float32 values it represents.

    FP8 and MXFP8 weights come back dequantized (their `weight_scale_inv`
    companions are folded in and not listed); BF16/F16 widen exactly. Keys are
    the checkpoint's own names.
    """
    path = Path(path)
    raw: dict[str, tuple[str, np.ndarray]] = {}
    for f in sorted(path.glob("model*.safetensors")):
        raw.update(st.read_file(f))
    qc = _quantization_config(path)
    block = qc.get("weight_block_size", [128, 128])
    out = {}
    for name, (dtype, arr) in raw.items():
        if name.endswith("_scale_inv"):
            continue
        if dtype == "F8_E4M3":
            s_dtype, scale = raw[name + "_scale_inv"]
            if s_dtype == "U8":  # MXFP8: E8M0 exponents along the input dim
                out[name] = st.mxfp8_dequantize(arr, scale, group=block[1])
            else:
                assert block[0] == block[1], block
                out[name] = st.fp8_block_dequantize(arr, scale, block=block[0])
        else:
            out[name] = arr.astype(np.float32)
    return out


def param_count(path: Path) -> tuple[int, int, int]:
    """(tensors, parameters, data bytes) from the safetensors headers alone.
    FP8 scales count as tensors and bytes but not as parameters."""
    n = params = nbytes = 0
    for f in sorted(Path(path).glob("model*.safetensors")):
        for name, info in st.read_header(f).items():
            n += 1
            b, e = info["data_offsets"]
            nbytes += e - b
            if not name.endswith("_scale_inv"):
                params += math.prod(info["shape"])
    return n, params, nbytes
