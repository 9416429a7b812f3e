"""The KL divergence between two next-token distributions, from logits that come a vocabulary chunk at a time.

A head of 200,064 rows is too big to hold in float32 beside everything else,
so logits are made HEAD_ROWS rows of the vocabulary at a time; `OnlineKL`
keeps, per token, running log-sum-exps of both sets of logits and the
p-weighted sum of their difference (rescaled as the running maximum moves, as
an online softmax does), which is all KL(p || q) needs:

    KL = sum_v p_v (z_v - u_v) - logsumexp(z) + logsumexp(u)
"""

from __future__ import annotations

import mlx.core as mx

HEAD_ROWS = 8192  # vocabulary rows of the head turned into float32 at a time


class OnlineKL:
    """KL(softmax(z) || softmax(u)) per token, z the reference logits, u the perturbed ones."""

    def __init__(self):
        self.m_z = self.s_z = self.m_u = self.s_u = self.a = None

    def update(self, z: mx.array, u: mx.array) -> None:
        """One vocabulary chunk: z, u [tokens, rows], float32."""
        cz = mx.max(z, axis=-1)
        cu = mx.max(u, axis=-1)
        if self.m_z is None:
            self.m_z, self.m_u = cz, cu
            self.s_z = self.s_u = self.a = mx.zeros(z.shape[:-1], dtype=mx.float32)
        m_z = mx.maximum(self.m_z, cz)
        m_u = mx.maximum(self.m_u, cu)
        old = mx.exp(self.m_z - m_z)
        e = mx.exp(z - m_z[:, None])
        self.s_z = self.s_z * old + mx.sum(e, axis=-1)
        self.a = self.a * old + mx.sum(e * (z - u), axis=-1)
        self.s_u = self.s_u * mx.exp(self.m_u - m_u) + mx.sum(mx.exp(u - m_u[:, None]), axis=-1)
        self.m_z, self.m_u = m_z, m_u
        mx.eval(self.m_z, self.m_u, self.s_z, self.s_u, self.a)

    def per_token(self) -> mx.array:
        kl = self.a / self.s_z - (self.m_z + mx.log(self.s_z)) + (self.m_u + mx.log(self.s_u))
        return mx.maximum(kl, 0.0)  # rounding can leave a hair below zero where p and q agree

    def mean(self) -> float:
        return mx.mean(self.per_token()).item()
