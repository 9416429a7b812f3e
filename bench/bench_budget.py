"""Benchmark: fit to budget on the full MiniMax-M3 inventory (issue 17.8).

On the header-only M3 replica with Config-I, times the feasibility check (sizes
alone, what `fit` and the dialog now do before any survey) and `budget.propose`
(the one solver, exact DP where its grid is affordable, else the Lagrangian fill)
for a few targets, with synthetic per-cell costs (a steep curve in bits, a
random sensitivity per cell, fixed seed). The peer, measured in the same run,
is the greedy the studio used before (best error drop per byte first), on the
same cells, sizes and costs. Prints seconds, which path the solver took, bytes
against the target, the summed cost of both, and the Lagrangian lower bound (no
choice costs less), which shows how close the non-exact path comes.

    python bench/bench_budget.py [--targets 1.2 0.95 0.85]
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import time

from _replica import m3_replica

from studio.core.budget import propose as P
from studio.core.budget.solve import DP_LIMIT
from studio.core.defaults import AFFINE_BITS
from studio.core.project import Project


def greedy(table: dict, spare: int) -> float:
    """The old proposer: every cell at its fewest bits, then the best cost drop per byte while it fits."""
    choice = {cell: 0 for cell in table}
    heap = []

    def push(cell):
        i = choice[cell]
        if i + 1 < len(table[cell]):
            (_, b0, c0), (_, b1, c1) = table[cell][i], table[cell][i + 1]
            heapq.heappush(heap, (-(c0 - c1) / max(b1 - b0, 1), str(cell), cell))

    for cell in table:
        push(cell)
    while heap:
        _, _, cell = heapq.heappop(heap)
        i = choice[cell]
        extra = table[cell][i + 1][1] - table[cell][i][1]
        if extra <= spare:
            spare -= extra
            choice[cell] = i + 1
            push(cell)
    return sum(table[cell][i][2] for cell, i in choice.items())


def lower_bound(table: dict, spare: int) -> float:
    """The Lagrangian dual: no choice within `spare` bytes costs less (max over the price per byte)."""
    def dual(price):
        return sum(min(c + price * (b - opts[0][1]) for _, b, c in opts) for opts in table.values()) - price * spare

    lo, hi = 0.0, 1.0
    while dual(hi) > dual(hi / 2) and hi < 1e6:
        hi *= 2
    for _ in range(200):  # the dual is concave in the price: ternary search
        a, b = lo + (hi - lo) / 3, hi - (hi - lo) / 3
        lo, hi = (a, hi) if dual(a) < dual(b) else (lo, b)
    return dual((lo + hi) / 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=float, nargs="+", default=[1.2, 0.95, 0.85],
                        help="targets as fractions of Config-I's size")
    args = parser.parse_args()
    project = Project.open(m3_replica(), "config-i")
    cells = P.affine_cells(project)
    rng = random.Random(0)
    costs = {cell: {b: rng.uniform(0.2, 5.0) * 4.0 ** -b for b in AFFINE_BITS} for cell in cells}
    t = time.perf_counter()
    least = P.smallest_bytes(project)
    check_s = time.perf_counter() - t
    print(f"MiniMax-M3 replica, Config-I: {project.estimate.total_bytes / 1e9:.2f} GB, {len(cells)} affine cells; "
          f"smallest reachable {least / 1e9:.2f} GB (feasibility check {check_s:.2f} s, no survey)")
    fixed = P._fixed_bytes(project, cells)
    sizes = {c: {b: P._cell_bytes(project, m, b) for b in AFFINE_BITS} for c, m in cells.items()}
    table = {c: [(b, sizes[c][b], costs[c][b]) for b in AFFINE_BITS] for c in cells}
    base = {c: sizes[c][AFFINE_BITS[0]] for c in cells}
    g = 0
    for c in cells:
        for b in AFFINE_BITS:
            g = math.gcd(g, sizes[c][b] - base[c])
    print(f"{'target':>8} {'path':>9} {'propose s':>10} {'greedy s':>9} {'bytes/target':>13} "
          f"{'cost':>10} {'greedy cost':>12} {'ratio':>6} {'bound':>10}")
    for fraction in args.targets:
        target = int(project.estimate.total_bytes * fraction)
        spare = target - fixed - sum(base.values())
        path = "exact DP" if (spare // g + 1) * len(cells) <= DP_LIMIT else "Lagrange"
        t = time.perf_counter()
        proposal = P.propose(project, target, costs)
        propose_s = time.perf_counter() - t
        t = time.perf_counter()
        peer = greedy(table, spare)
        greedy_s = time.perf_counter() - t
        print(f"{fraction:>8.2f} {path:>9} {propose_s:>10.2f} {greedy_s:>9.2f} "
              f"{proposal.total_bytes / target:>13.6f} {proposal.error_after:>10.4g} {peer:>12.4g} "
              f"{proposal.error_after / peer:>6.3f} {lower_bound(table, spare):>10.4g}")


if __name__ == "__main__":
    main()
