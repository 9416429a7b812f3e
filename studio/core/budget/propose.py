"""Fit a policy to a size budget: per role-and-layer bits that minimise measured error.

The grid's cells (role x layer) are the choices. Cells the current policy keeps
or drops stay as they are (a router kept in f16 is a decision, not a cost), and
so do cells in the mx/nv float modes, which have one bit width each.
Every quantized cell starts at its lowest bit width, then the cell whose next
step up buys the most error reduction per byte is upgraded, while the total
stays within the budget: the classic greedy for this knapsack, exact enough
when the error falls steeply with bits, as it does.

The error of a cell at b bits is the element-weighted mean squared relative
error of its units, measured by `studio.core.quant_error.round_trip` on samples of the
real weights (see `studio.core.quant_error.survey.survey`).
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass

from studio.core.defaults import AFFINE_BITS
from studio.core.errors import StudioError
from studio.core.policy.estimate import unit_bytes
from studio.core.policy.grid import Cell, cell_of
from studio.core.policy.plan import decide
from studio.core.policy.bit_policy import Policy, Quantize
from studio.core.policy.grid_paint import apply_stroke
from studio.core.project import Project



@dataclass(frozen=True)
class CellChange:
    role: str
    layer: int | None
    old_bits: int
    new_bits: int
    old_bytes: int = 0
    new_bytes: int = 0
    old_error: float = 0.0  # the cell's mean squared relative error
    new_error: float = 0.0


@dataclass
class BudgetProposal:
    policy: Policy
    changes: list[CellChange]
    total_bytes: int
    target_bytes: int
    error_before: float
    error_after: float

    def summary(self) -> str:
        return (f"{len(self.changes)} cell(s) changed; {self.total_bytes / 1e9:.2f} GB for a "
                f"{self.target_bytes / 1e9:.2f} GB budget; weighted error {self.error_before:.4g} -> "
                f"{self.error_after:.4g}")


def quantized_cells(project: Project) -> dict[Cell, list[int]]:
    """Unit indices of every cell the current plan quantizes."""
    cells: dict[Cell, list[int]] = defaultdict(list)
    for index, (unit, decision) in enumerate(project.plan.rows()):
        if decision.action == "quantize":
            cells[cell_of(unit)].append(index)
    return dict(cells)


def affine_cells(project: Project) -> dict[Cell, list[int]]:
    """The cells whose bit width may change: quantized in affine mode."""
    decisions = project.plan.decisions
    return {c: m for c, m in quantized_cells(project).items() if decisions[m[0]].mode == "affine"}


def _cell_bytes(project: Project, members: list[int], bits: int) -> int:
    plan = project.plan
    total = 0
    for i in members:
        current = plan.decisions[i]
        action = Quantize(bits, current.group_size, "affine")
        total += unit_bytes(plan.units[i], decide(plan.units[i], action, current.rule, plan.float_dtype))
    return total


def propose(project: Project, target_bytes: int, cell_errors: dict[Cell, dict[int, float]],
            options: tuple[int, ...] = AFFINE_BITS) -> BudgetProposal:
    """A policy within `target_bytes` that minimises the summed cell error."""
    cells = affine_cells(project)
    est = project.estimate
    fixed = est.total_bytes - sum(est.unit_bytes[i] for members in cells.values() for i in members)
    sizes = {cell: {b: _cell_bytes(project, members, b) for b in options} for cell, members in cells.items()}
    current_bits = {cell: project.plan.decisions[members[0]].bits for cell, members in cells.items()}

    def error(cell, bits):
        return cell_errors.get(cell, {}).get(bits, 0.0)

    choice = {cell: options[0] for cell in cells}
    total = fixed + sum(sizes[c][options[0]] for c in cells)
    if total > target_bytes:
        raise StudioError(f"{target_bytes / 1e9:.2f} GB is below the smallest this policy can reach "
                          f"({total / 1e9:.2f} GB with every quantized cell at {options[0]}-bit).")

    def push(heap, cell):
        position = options.index(choice[cell])
        if position + 1 < len(options):
            nxt = options[position + 1]
            extra = sizes[cell][nxt] - sizes[cell][choice[cell]]
            gain = error(cell, choice[cell]) - error(cell, nxt)
            heapq.heappush(heap, (-gain / max(extra, 1), cell[0], -1 if cell[1] is None else cell[1], cell, nxt))

    heap: list = []
    for cell in cells:
        push(heap, cell)
    while heap:
        _, _, _, cell, nxt = heapq.heappop(heap)
        extra = sizes[cell][nxt] - sizes[cell][choice[cell]]
        if total + extra <= target_bytes:
            total += extra
            choice[cell] = nxt
            push(heap, cell)

    def change(cell: Cell, bits: int) -> CellChange:
        old = current_bits[cell]
        old_bytes = sizes[cell][old] if old in sizes[cell] else _cell_bytes(project, cells[cell], old)
        return CellChange(cell[0], cell[1], old, bits, old_bytes, sizes[cell][bits], error(cell, old), error(cell, bits))

    order = sorted(choice, key=lambda c: (c[0], -1 if c[1] is None else c[1]))
    changes = [change(cell, choice[cell]) for cell in order if choice[cell] != current_bits[cell]]
    group = {cell: project.plan.decisions[members[0]].group_size for cell, members in cells.items()}
    stroke = {(c.role, c.layer): Quantize(c.new_bits, group[(c.role, c.layer)], "affine") for c in changes}
    policy = apply_stroke(project.policy, stroke, project.grid, note="fit to budget")
    before = sum(error(c, current_bits[c]) for c in cells)
    after = sum(error(c, choice[c]) for c in cells)
    policy = policy.with_rules(policy.rules, name=f"{project.policy.name} (fit to {target_bytes / 1e9:.1f} GB)")
    return BudgetProposal(policy, changes, total, target_bytes, before, after)
