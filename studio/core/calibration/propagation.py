"""Perturbed copies of the residual stream, carried through the float layers to the logits: each layer's gain.

    p = Propagation()
    p.start(origin, perturbed, reference)   # after the layer `origin` (None: the embedding)
    p.advance(run)                          # every copy through the layer now in memory
    p.gains(final_norm, head_weight, reference_final) -> {origin: nats per unit of ||d||^2}

The streamed pass holds one layer at a time, so it cannot rerun the layers
after a perturbation for each one; instead every copy started so far rides
along: layer l passes the float hidden states and then the l copies started
before it. At the end each copy's logits are compared with the float ones
(KL per token, averaged) and divided by the mean squared norm of the
perturbation it started with. On a model of L layers that is L(L+1)/2 layer
calls on GAIN_SEQUENCES sequences, a fraction of the per-cell measurements'.
"""

from __future__ import annotations

from typing import Callable

import mlx.core as mx
import numpy as np

from studio.core.calibration.logits_kl import HEAD_ROWS, OnlineKL
from studio.core.calibration.sensitivity import squared_change

GAIN_SEQUENCES = 4  # calibration sequences each perturbed copy carries


class Propagation:
    def __init__(self, chunk: int):
        self.chunk = chunk  # sequences per layer call
        self.streams: dict[int | None, mx.array] = {}
        self.energy: dict[int | None, float] = {}

    def start(self, origin: int | None, perturbed: mx.array, reference: mx.array) -> None:
        energy = squared_change(perturbed, reference)
        if energy > 0:
            self.streams[origin] = perturbed
            self.energy[origin] = energy

    def advance(self, run: Callable[[mx.array, np.ndarray], mx.array]) -> None:
        """Every copy through the current layer; `run(x, rows)` calls it on sequences `rows` of the corpus."""
        if not self.streams:
            return
        origins = list(self.streams)
        x = mx.concatenate([self.streams[o] for o in origins], axis=0)
        per = self.streams[origins[0]].shape[0]
        rows = np.tile(np.arange(per), len(origins))
        outs = [run(x[a:a + self.chunk], rows[a:a + self.chunk]) for a in range(0, x.shape[0], self.chunk)]
        y = mx.concatenate(outs, axis=0) if len(outs) > 1 else outs[0]
        mx.eval(y)
        for i, o in enumerate(origins):
            self.streams[o] = y[i * per:(i + 1) * per]

    def gains(self, final_norm: Callable[[mx.array], mx.array], head_weight: mx.array,
              reference: mx.array) -> dict[int | None, float]:
        """{origin: mean KL of its copy's logits against `reference`'s, over its ||d||^2}. `reference`:
        the float final-normed hidden states [tokens, hidden] of the same sequences."""
        hidden = reference.shape[-1]
        finals = {}
        for o, s in self.streams.items():
            finals[o] = final_norm(s).reshape(-1, hidden)
            mx.eval(finals[o])
        self.streams = {}
        kl = {o: OnlineKL() for o in finals}
        for first in range(0, head_weight.shape[0], HEAD_ROWS):
            w = head_weight[first:first + HEAD_ROWS].astype(mx.float32)
            z = reference @ w.T
            for o, f in finals.items():
                kl[o].update(z, f @ w.T)
        return {o: acc.mean() / self.energy[o] for o, acc in kl.items()}
