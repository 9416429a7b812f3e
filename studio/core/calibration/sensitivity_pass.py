"""The sensitivity side of the streamed calibration pass: per-cell output changes, each layer's
gain, and at the end every cell's sensitivity in nats (see `sensitivity` for the model).

    m = SensitivityPass(stats, bits_options, group_size, dtype, probe_sequences, check_cancel)
    m.embedding(skeleton, tokens, h)          # after the embedding
    m.layer(index, run, probes, h, out)       # after each decoder layer's float run
    m.finish(skeleton, final)                 # after the final norm: fills stats.sensitivity
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from studio.core.calibration import sensitivity as sens
from studio.core.calibration.propagation import GAIN_SEQUENCES, Propagation


class SensitivityPass:
    def __init__(self, stats, bits_options, group_size: int, dtype, probe_sequences: int, chunk: int,
                 check_cancel):
        self.stats, self.bits, self.group_size, self.dtype = stats, tuple(bits_options), group_size, dtype
        self.probe, self.check_cancel = probe_sequences, check_cancel
        self.gain_sequences = min(GAIN_SEQUENCES, probe_sequences)
        self.propagation = Propagation(chunk)
        self.change: dict[tuple, dict[int, float]] = {}  # cell -> bits -> mean ||d||^2 at its layer's output
        self.energy: dict[int | None, float] = {}  # layer (None: embedding) -> mean ||output||^2, probe tokens
        self.embedding_cell = None
        self.tied_head = False

    def embedding(self, skeleton, tokens: np.ndarray, h: mx.array) -> None:
        unit = skeleton.embedding
        if not unit.quantizable(self.group_size):
            return
        table = skeleton.values(unit)
        self.embedding_cell = (unit.role, None)
        change, self.energy[None] = sens.embedding_change(table, tokens[:self.probe], self.bits, self.group_size,
                                                          self.dtype)
        self.change[self.embedding_cell] = change
        # The first layer's input with the embedding at REFERENCE_BITS, through the model's own
        # embedding path: only the rows these tokens use are quantized (each row is its own groups).
        gain_tokens = tokens[:self.gain_sequences]
        ids, where = np.unique(gain_tokens, return_inverse=True)
        rows = table[mx.array(ids)].astype(mx.float32)
        ones = mx.ones((rows.shape[-1],), dtype=mx.float32)
        quantized = sens.round_trip(rows, self.group_size, sens.REFERENCE_BITS, ones, self.dtype)
        perturbed, _ = skeleton.embed(mx.array(where.reshape(gain_tokens.shape).astype(np.int32)), table=quantized)
        self.propagation.start(None, perturbed, h[:self.gain_sequences])

    def layer(self, index: int, run, probes: dict, h: mx.array, out: mx.array) -> None:
        """`run(x, rows)`: the loaded layer on sequences `rows` of the corpus (float unless a probe says)."""
        x, ref = h[:self.probe], out[:self.probe]
        self.change.update(sens.measure_layer(lambda v: run(v, np.arange(v.shape[0])), probes, x, ref, self.stats,
                                              self.bits, self.group_size, self.dtype, self.check_cancel))
        self.energy[index] = sens.squared_change(ref, mx.zeros_like(ref))
        self.check_cancel()
        self.propagation.advance(run)
        g = self.gain_sequences
        perturbed = sens.whole_layer(lambda v: run(v, np.arange(v.shape[0])), probes, h[:g], self.stats,
                                     self.group_size, self.dtype)
        if perturbed is not None:
            self.propagation.start(index, perturbed, out[:g])

    def finish(self, skeleton, final: mx.array, length: int) -> None:
        """`final`: the final-normed float hidden states [tokens, hidden], sequences of `length` tokens."""
        stats = self.stats
        weight = skeleton.head_weight()
        gains = self.propagation.gains(skeleton.final_norm, weight, final[:self.gain_sequences * length])
        for cell, change in self.change.items():
            layer = cell[1]
            gain = gains.get(layer, 0.0)
            stats.sensitivity[cell] = {b: gain * c for b, c in change.items()}
            energy = self.energy.get(layer, 0.0)
            stats.output_error[cell] = {b: c / energy if energy > 0 else 0.0 for b, c in change.items()}
        h = final[:self.probe * length]
        head = skeleton.head
        if head is not None and head.quantizable(self.group_size):
            kl, relative = sens.head_kl(weight, h, stats.importance(head.path), self.bits, self.group_size, self.dtype)
            stats.sensitivity[(head.role, None)] = kl
            stats.output_error[(head.role, None)] = relative
        elif head is None and self.embedding_cell is not None:
            # Tied: the one table is also the head, so quantizing it costs at both ends.
            kl, _ = sens.head_kl(weight, h, stats.importance(skeleton.embedding.path), self.bits, self.group_size,
                                 self.dtype)
            input_side = stats.sensitivity[self.embedding_cell]
            stats.sensitivity[self.embedding_cell] = {b: input_side[b] + kl[b] for b in self.bits}
        stats.layer_gain = {layer: gains.get(layer, 0.0) for layer in self.energy}
