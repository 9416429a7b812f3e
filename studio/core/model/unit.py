"""A unit: one thing the converter writes, a quantizable module or a plain tensor.

Its own module so that `units` (which groups tensors into units) and
`architectures` (which says how one architecture's tensors become units) can
both build them without importing each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from studio.core.model.roles import ROLE_BY_KEY


@dataclass(slots=True)
class Unit:
    """One thing the converter writes: a quantizable module or a plain tensor.

    `path` is the module path as mlx-lm's model class names it after sanitize
    (for a plain tensor, the tensor's full output name). `shape` is the output
    weight's logical shape: (out, in), (experts, out, in), or any shape for a
    plain tensor. `sources` are the logical source tensors in stacking order;
    `transform` says how they become the output.
    """

    path: str
    role: str
    layer: int | None
    kind: str  # "module" (quantizable weight) or "tensor"
    shape: tuple[int, ...]
    sources: tuple[str, ...]
    source_dtype: str
    transform: str = "copy"  # copy | stack | kv_b_embed_q | kv_b_unembed_out | split_gate | split_up | transpose

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def weight_name(self) -> str:
        return f"{self.path}.weight" if self.kind == "module" else self.path

    @property
    def in_features(self) -> int:
        return self.shape[-1]

    @property
    def experts(self) -> int:
        return self.shape[0] if self.kind == "module" and len(self.shape) == 3 else 1

    def quantizable(self, group_size: int) -> bool:
        # mlx-lm's rule: a module whose input dim the group size does not divide stays as it is.
        return self.kind == "module" and self.in_features % group_size == 0


def is_module(role: str, shape: tuple[int, ...], leaf: str) -> bool:
    if leaf != "weight" or len(shape) not in (2, 3):
        return False
    return ROLE_BY_KEY[role].quantizable and role not in ("vision", "other")
