"""How a loaded model computes: MLX's quantized kernels, or its weights dequantized once in float32.

On Metal the quantized kernels are fast and accurate: they stay. On MLX's CPU
backend the bfloat16 quantized matmul is both slow and imprecise (measured on a
135M llama at 4-bit: one weight's matmul off by 4.3% against 0.17% for a plain
matmul of the dequantized weight, and a 64-token forward 7x slower than
float32), which makes a CPU evaluation overstate the damage. So on the CPU,
evaluation and chat replace every quantized module by a plain one holding the
exact values the format stores (``mx.dequantize`` in float32, once, at load)
and run the whole model in float32. The price is memory: 4 bytes a weight.

``prepare(model, compute)`` applies the choice and returns the path's name,
which the results carry: ``"dequantized_float32"`` (quantized weights were
dequantized), ``"float32"`` (nothing was quantized; cast to float32) or
``"quantized_kernels"``.
"""

from __future__ import annotations

COMPUTE_CHOICES = ("auto", "quantized", "dequantized")
DEQUANTIZED = "dequantized_float32"
FLOAT32 = "float32"
KERNELS = "quantized_kernels"


def on_cpu_backend() -> bool:
    """True where MLX computes on the CPU (Linux, or a Mac without Metal)."""
    import mlx.core as mx

    return mx.default_device().type == mx.cpu or not mx.metal.is_available()


def device_name() -> str:
    """"cpu" or "gpu": where MLX computes by default (``mx.default_device()``)."""
    return "cpu" if on_cpu_backend() else "gpu"


def has_unquantized_experts(model) -> bool:
    """True if any stacked-expert layer would run through `gather_mm`, which is float32-only on CPU."""
    import mlx.core as mx
    from mlx_lm.models.switch_layers import SwitchLinear

    return any(isinstance(module, SwitchLinear) and module.weight.dtype != mx.float32
               for _, module in model.named_modules())


def quantized_classes():
    import mlx.nn as nn
    from mlx_lm.models.switch_layers import QuantizedSwitchLinear

    return nn.QuantizedLinear, nn.QuantizedEmbedding, QuantizedSwitchLinear


def is_quantized(model) -> bool:
    classes = quantized_classes()
    return any(isinstance(m, classes) for _, m in model.named_modules())


def dense_weight(module):
    """The float32 weight a quantized module stands for: exactly the values its format stores."""
    import mlx.core as mx

    def f32(a):
        return None if a is None else (a.astype(mx.float32) if mx.issubdtype(a.dtype, mx.floating) else a)

    extra = {}
    global_scale = getattr(module, "global_scale", None)
    if global_scale is not None:
        extra["global_scale"] = global_scale
    return mx.dequantize(module.weight, f32(module.scales), f32(module.get("biases")),
                         group_size=module.group_size, bits=module.bits, mode=module.mode,
                         dtype=mx.float32, **extra)


def _dense_module(module):
    """A plain float32 module in place of a quantized one, or None if ``module`` is not quantized."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.models.switch_layers import QuantizedSwitchLinear, SwitchLinear

    if isinstance(module, nn.QuantizedLinear):
        weight = dense_weight(module)
        dense = nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in module)
    elif isinstance(module, nn.QuantizedEmbedding):
        weight = dense_weight(module)
        dense = nn.Embedding(*weight.shape)
    elif isinstance(module, QuantizedSwitchLinear):
        weight = dense_weight(module)
        dense = SwitchLinear(weight.shape[2], weight.shape[1], weight.shape[0], bias="bias" in module)
    else:
        return None
    mx.eval(weight)  # one module at a time: the quantized copy can go before the next is made
    dense.weight = weight
    if "bias" in module:
        dense.bias = module.bias.astype(mx.float32)
    return dense


def dequantize_model(model) -> bool:
    """Replace every quantized module by its dense float32 equivalent; True if any was quantized."""
    import mlx.nn as nn
    from mlx.utils import tree_map_with_path

    replaced = []

    def swap(_path, module):
        dense = _dense_module(module)
        if dense is None:
            return module
        replaced.append(_path)
        return dense

    leaves = tree_map_with_path(swap, model.leaf_modules(), is_leaf=nn.Module.is_module)
    model.update_modules(leaves)
    return bool(replaced)


def resolve(compute: str) -> str:
    """"dequantized" or "quantized" for a choice in ``COMPUTE_CHOICES`` ("auto": by backend)."""
    if compute not in COMPUTE_CHOICES:
        raise ValueError(f"unknown compute choice {compute!r}")
    if compute == "auto":
        return "dequantized" if on_cpu_backend() else "quantized"
    return compute


def prepare(model, compute: str = "auto") -> str:
    """Set ``model`` up to compute as ``compute`` says (in place); return the path's name."""
    import mlx.core as mx

    if resolve(compute) == "dequantized":
        path = DEQUANTIZED if dequantize_model(model) else FLOAT32
        model.set_dtype(mx.float32)
        mx.eval(model.parameters())
        return path
    if on_cpu_backend() and has_unquantized_experts(model):
        model.set_dtype(mx.float32)  # gather_mm is float32-only on the CPU
        mx.eval(model.parameters())
        return FLOAT32 if not is_quantized(model) else KERNELS
    return KERNELS if is_quantized(model) else str(_dtype_name(model))


def _dtype_name(model) -> str:
    from mlx.utils import tree_flatten

    for _, value in tree_flatten(model.parameters()):
        return str(value.dtype).replace("mlx.core.", "")
    return "?"
