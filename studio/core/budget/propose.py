"""Fit a policy to a size budget: per role-and-layer bits that minimise a measured cost.

    smallest_bytes(project) -> int             sizes alone: the least any costs can reach
    check_feasible(project, target_bytes)      one sentence if the target is below it
    propose(project, target_bytes, costs) -> BudgetProposal

The grid's cells (role x layer) are the choices. Cells the current policy keeps
or drops stay as they are (a router kept in f16 is a decision, not a cost), and
so do cells in the mx/nv float modes, which have one bit width each. A cell's
options are the affine bit widths, each with its exact output bytes and its
cost; a cell the costs do not cover at every width keeps its current bits.

The costs are either the weight error (element-weighted mean squared relative
error of the cell's units, from `studio.core.quant_error.survey`) or the
output-space sensitivity (from the calibration pass,
`CalibrationStats.sensitivity`); either way one solver,
`studio.core.budget.solve` (the multiple-choice knapsack: exact where its grid
is affordable, a Lagrangian fill where not), chooses the bits, never over the
budget. Whether a target is reachable at all is a question of sizes alone, so
`check_feasible` answers it before anything is measured.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from studio.core.budget.solve import solve
from studio.core.defaults import AFFINE_BITS
from studio.core.errors import StudioError
from studio.core.formatting import human_bytes
from studio.core.policy.bit_policy import Policy, Quantize
from studio.core.policy.estimate import unit_bytes
from studio.core.policy.grid import Cell, cell_of
from studio.core.policy.grid_paint import apply_stroke
from studio.core.policy.plan import decide
from studio.core.project import Project


@dataclass(frozen=True)
class CellChange:
    role: str
    layer: int | None
    old_bits: int
    new_bits: int
    old_bytes: int = 0
    new_bytes: int = 0
    old_error: float = 0.0  # the cell's cost at its old bits (weight error or sensitivity)
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


def _fixed_bytes(project: Project, cells: dict[Cell, list[int]]) -> int:
    """The bytes no choice changes: everything outside the affine cells."""
    est = project.estimate
    return est.total_bytes - sum(est.unit_bytes[i] for members in cells.values() for i in members)


def _too_small(target_bytes: int, least: int, how: str) -> StudioError:
    target, smallest = human_bytes(target_bytes), human_bytes(least)
    if target == smallest:  # too close to tell apart at two decimals
        target, smallest = f"{target_bytes:,} bytes", f"{least:,} bytes"
    return StudioError(f"{target} is below the smallest this policy can reach ({smallest} with {how}); "
                       "start from a policy that quantizes more tensors.")


def smallest_bytes(project: Project, options: tuple[int, ...] = AFFINE_BITS) -> int:
    """The least any proposal can reach: every affine cell at its fewest bits (sizes alone, no costs)."""
    cells = affine_cells(project)
    return _fixed_bytes(project, cells) + sum(_cell_bytes(project, m, min(options)) for m in cells.values())


def check_feasible(project: Project, target_bytes: int, options: tuple[int, ...] = AFFINE_BITS) -> None:
    """One sentence if `target_bytes` is below `smallest_bytes`: checked before any survey or
    calibration pass, which would only measure what cannot be used."""
    least = smallest_bytes(project, options)
    if least > target_bytes:
        raise _too_small(target_bytes, least, f"every quantized cell at {min(options)}-bit")


def propose(project: Project, target_bytes: int, costs: dict[Cell, dict[int, float]],
            options: tuple[int, ...] = AFFINE_BITS, *, note: str = "fit to budget") -> BudgetProposal:
    """A policy within `target_bytes` that minimises the summed cell cost; see the module docstring."""
    options = tuple(sorted(options))
    cells = affine_cells(project)
    fixed = _fixed_bytes(project, cells)
    current = {cell: project.plan.decisions[members[0]].bits for cell, members in cells.items()}

    def cost(cell, bits):
        return costs.get(cell, {}).get(bits, 0.0)

    sizes: dict[Cell, dict[int, int]] = {}
    table = {}
    for cell, members in cells.items():
        measured = costs.get(cell, {})
        choices = options if all(b in measured for b in options) else (current[cell],)
        sizes[cell] = {b: _cell_bytes(project, members, b) for b in set(choices) | {current[cell]}}
        table[cell] = [(b, sizes[cell][b], cost(cell, b)) for b in choices]
    least = fixed + sum(min(size for _, size, _ in choices) for choices in table.values())
    if least > target_bytes:
        fixed_cells = sum(len(choices) == 1 for choices in table.values())
        how = f"every quantized cell at {options[0]}-bit" if not fixed_cells else \
            f"every measured cell at {options[0]}-bit and {fixed_cells} unmeasured one(s) as they are"
        raise _too_small(target_bytes, least, how)
    choice, cell_bytes, after = solve(table, target_bytes - fixed)

    order = sorted(choice, key=lambda c: (c[0], -1 if c[1] is None else c[1]))
    changes = [CellChange(c[0], c[1], current[c], choice[c], sizes[c][current[c]], sizes[c][choice[c]],
                          cost(c, current[c]), cost(c, choice[c]))
               for c in order if choice[c] != current[c]]
    group = {cell: project.plan.decisions[members[0]].group_size for cell, members in cells.items()}
    stroke = {(c.role, c.layer): Quantize(c.new_bits, group[(c.role, c.layer)], "affine") for c in changes}
    policy = apply_stroke(project.policy, stroke, project.grid, note=note)
    policy = policy.with_rules(policy.rules, name=f"{project.policy.name} (fit to {human_bytes(target_bytes)})")
    before = sum(cost(c, current[c]) for c in cells)
    after = sum(cost(c, choice[c]) for c in cells)
    return BudgetProposal(policy, changes, fixed + cell_bytes, target_bytes, before, after)
