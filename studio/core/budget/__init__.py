"""Fit a policy to a size budget (not memory fit, which is `studio.core.memory`).

`propose`: the feasibility check (sizes alone) and the bits per grid cell that minimise a measured
cost (weight error from the survey, or output-space sensitivity) within a byte budget.
`solve`: the one solver behind it, the multiple-choice knapsack (exact where affordable).
`report`: the byte target, the proposal and its diff as rows a person reads.
"""
