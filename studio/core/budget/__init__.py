"""Fit a policy to a size budget (not memory fit, which is `studio.core.memory`).

`propose`: the greedy choice of bits per grid cell within a byte budget.
`report`: the byte target, the proposal and its diff as rows a person reads.
"""
