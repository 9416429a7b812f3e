"""Memory fit: does a quantized model fit a Mac? Weights plus KV cache against the GPU memory limit.

(Fitting a policy to a size budget is `studio.core.budget`.)

macOS lets the GPU wire only part of unified memory by default
(`recommendedMaxWorkingSetSize`, raised with `sysctl iogpu.wired_limit_mb`):
about two thirds on machines up to 36 GB and three quarters above.
"""

from __future__ import annotations

from dataclasses import dataclass

from studio.core.formatting import GB

MAC_MEMORY_GB = (64, 96, 128, 192, 256, 512)
CONTEXT_CHOICES = (4096, 8192, 32768, 65536, 131072, 262144)
DEFAULT_CONTEXT = 32768
# Activations, the tokenizer and the runtime: a small allowance, not a measurement.
RUNTIME_OVERHEAD_BYTES = 2 * 10**9


def default_context(text_config: dict, wanted: int = DEFAULT_CONTEXT) -> int:
    """The context a fit assumes: `wanted`, but never past the model's own limit
    (`max_position_embeddings`): an 8K model is not judged at 32K."""
    limit = text_config.get("max_position_embeddings")
    return min(wanted, int(limit)) if isinstance(limit, int) and limit > 0 else wanted


def gpu_limit_bytes(mac_gb: int) -> int:
    """A Mac sold as "N GB" holds N x 2^30 bytes of memory; the GPU may wire a fraction of it."""
    fraction = 2 / 3 if mac_gb <= 36 else 3 / 4
    return int(mac_gb * 2**30 * fraction)


def kv_bytes_per_token(text_config: dict, bytes_per_value: int = 2) -> int:
    """KV cache bytes for one token across all layers, in bf16 by default."""
    layers = int(text_config.get("num_hidden_layers") or 0)
    if text_config.get("kv_lora_rank"):  # multi-head latent attention caches the latent
        width = text_config["kv_lora_rank"] + text_config.get("qk_rope_head_dim", 0)
        return layers * width * bytes_per_value
    heads = text_config.get("num_attention_heads") or 1
    kv_heads = text_config.get("num_key_value_heads") or heads
    head_dim = text_config.get("head_dim") or (text_config.get("hidden_size", 0) // heads)
    return 2 * layers * kv_heads * head_dim * bytes_per_value


@dataclass(frozen=True)
class MemoryFit:
    mac_gb: int
    context: int
    weights_bytes: int
    kv_bytes: int
    overhead_bytes: int
    limit_bytes: int

    @property
    def needed_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.overhead_bytes

    @property
    def fits(self) -> bool:
        return self.needed_bytes <= self.limit_bytes

    @property
    def verdict(self) -> str:
        return "fits" if self.fits else "does not fit"

    @property
    def where(self) -> str:
        return f"a {self.mac_gb} GB Mac at {self.context:,} tokens of context"

    @property
    def needs(self) -> str:
        # In GB like every size in the app (see studio.core.formatting): next to "167.10 GB of weights".
        need, limit = self.needed_bytes / GB, self.limit_bytes / GB
        return f"needs {need:.1f} GB of the {limit:.1f} GB the GPU may use by default"

    def sentence(self) -> str:
        return f"{self.verdict} {self.where}: {self.needs}"

    def to_dict(self) -> dict:
        return {"mac_gb": self.mac_gb, "context": self.context, "weights_bytes": self.weights_bytes,
                "kv_bytes": self.kv_bytes, "overhead_bytes": self.overhead_bytes,
                "limit_bytes": self.limit_bytes, "fits": self.fits}


def memory_fit(weights_bytes: int, text_config: dict, mac_gb: int = 256, context: int = 32768) -> MemoryFit:
    return MemoryFit(mac_gb, context, weights_bytes, kv_bytes_per_token(text_config) * context,
                     RUNTIME_OVERHEAD_BYTES, gpu_limit_bytes(mac_gb))


def weights_budget_bytes(text_config: dict, mac_gb: int, context: int) -> int:
    """Bytes left for the weights on a Mac: the GPU limit less KV cache and runtime (what `MemoryFit.fits` checks)."""
    return gpu_limit_bytes(mac_gb) - kv_bytes_per_token(text_config) * context - RUNTIME_OVERHEAD_BYTES
