"""Choose one option per cell (bits, group size) to minimise summed cost within a byte budget.

    solve(cells, budget) -> (choice per cell, total bytes, total cost)

`cells` maps a key to its options, each `(option, bytes, cost)`. This is the
multiple-choice knapsack. It is solved exactly by dynamic programming over
the budget measured in units of the greatest common divisor of every byte
difference (byte sizes of quantized tensors share large factors, so the grid
is coarse); when that grid is still too big, by the Lagrangian relaxation
(for a price per byte, each cell's best option is independent; bisect the
price to the budget) followed by a greedy fill of what is left. Either way
the answer's bytes never exceed the budget, and are summed exactly.
"""

from __future__ import annotations

import math
from typing import Hashable

import numpy as np

from studio.core.errors import StudioError

Option = tuple[Hashable, int, float]  # (what, bytes, cost)
DP_LIMIT = 60_000_000  # cells x grid points the exact solver may visit


def _check(cells: dict[Hashable, list[Option]], budget: int) -> int:
    if any(not opts for opts in cells.values()):
        raise ValueError("every cell needs at least one option")
    least = sum(min(b for _, b, _ in opts) for opts in cells.values())
    if least > budget:
        raise StudioError(f"the budget of {budget:,} bytes is below the smallest this policy can reach "
                          f"({least:,} bytes with every cell at its smallest setting).")
    return least


def solve(cells: dict[Hashable, list[Option]], budget: int) -> tuple[dict, int, float]:
    least = _check(cells, budget)
    keys = list(cells)
    base = {k: min(b for _, b, _ in cells[k]) for k in keys}
    g = 0
    for k in keys:
        for _, b, _ in cells[k]:
            g = math.gcd(g, b - base[k])
    spare = budget - least
    if g == 0:  # every option of every cell has the same size
        choice = {k: min(cells[k], key=lambda o: o[2])[0] for k in keys}
    else:
        grid = spare // g
        if (grid + 1) * len(keys) <= DP_LIMIT:
            choice = _dp(cells, keys, base, g, grid)
        else:
            choice = _lagrange(cells, keys, spare, base)
    return _result(cells, choice)


def _result(cells, choice) -> tuple[dict, int, float]:
    total_bytes = 0
    total_cost = 0.0
    for k, what in choice.items():
        _, b, c = next(o for o in cells[k] if o[0] == what)
        total_bytes += b
        total_cost += c
    return choice, total_bytes, total_cost


def _dp(cells, keys, base, g, grid) -> dict:
    inf = np.inf
    best = np.zeros(grid + 1)  # best[c]: least cost of the cells so far within c grid units
    picks = []
    for k in keys:
        options = cells[k]
        new = np.full(grid + 1, inf)
        pick = np.zeros(grid + 1, dtype=np.int16)
        for i, (_, b, cost) in enumerate(options):
            w = (b - base[k]) // g
            if w > grid:
                continue
            cand = np.full(grid + 1, inf)
            cand[w:] = best[: grid + 1 - w] + cost
            better = cand < new
            new[better] = cand[better]
            pick[better] = i
        best = new
        picks.append(pick)
    c = int(np.argmin(best))
    choice = {}
    for k, pick in zip(reversed(keys), reversed(picks)):
        i = int(pick[c])
        what, b, _ = cells[k][i]
        choice[k] = what
        c -= (b - base[k]) // g
    return choice


def _lagrange(cells, keys, spare, base) -> dict:
    def pick(price):
        return {k: min(cells[k], key=lambda o: (o[2] + price * (o[1] - base[k]), o[1])) for k in keys}

    def used(sel):
        return sum(o[1] - base[k] for k, o in sel.items())

    lo, hi = 0.0, 1.0
    while used(pick(hi)) > spare and hi < 1e30:
        hi *= 4
    for _ in range(200):
        mid = (lo + hi) / 2
        if used(pick(mid)) > spare:
            lo = mid
        else:
            hi = mid
    sel = pick(hi)
    left = spare - used(sel)
    # Greedy fill: the best cost drop per extra byte that still fits, until none does.
    while True:
        best = None
        for k in keys:
            for o in cells[k]:
                extra = o[1] - sel[k][1]
                gain = sel[k][2] - o[2]
                if gain > 0 and extra <= left:
                    score = gain / max(extra, 1)
                    if best is None or score > best[0]:
                        best = (score, k, o, extra)
        if best is None:
            break
        _, k, o, extra = best
        sel[k] = o
        left -= extra
    return {k: o[0] for k, o in sel.items()}
