"""A safetensors header entry and a logical tensor: the two records every reader of a model shares.

Their own module so the inventory (which lists them), the readers (which read
their bytes) and the model sources (which hand readers out) all sit above them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple


class RawTensor(NamedTuple):
    """One entry of a safetensors header, with absolute byte offsets in its shard.

    A NamedTuple rather than a dataclass: M3 has 45,700 of them and opening
    must stay well under a second.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    shard: str
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(slots=True)
class Tensor:
    """A logical tensor: the data plus any scale companions it is stored with.

    `shape` is the logical (dequantized) shape. `encoding` says how to read it:
    "float", "fp8" (128x128 block scales), "mxfp8" (E8M0 per 32), or "mlx"
    (MLX-quantized with `quant` = {"bits", "group_size", "mode"}).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    encoding: str
    data: RawTensor
    companions: dict[str, RawTensor] = field(default_factory=dict)
    quant: dict | None = None

    @property
    def shard(self) -> str:
        return self.data.shard

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + sum(c.nbytes for c in self.companions.values())

    @property
    def elements(self) -> int:
        return math.prod(self.shape)
