"""A policy for a byte budget from output-space sensitivity: the knapsack, exact to the byte.

Same cells, sizes and proposal as `studio.core.budget.propose` (the fit
dialog's diff shows it unchanged), with two differences: each cell's cost is
its measured output-space sensitivity (`CalibrationStats.sensitivity`) rather
than its weight error, and the choice is the knapsack's optimum
(`knapsack.solve`) rather than a greedy one. Cells the calibration pass did
not measure keep their current bits.
"""

from __future__ import annotations

from studio.core.budget.propose import BudgetProposal, CellChange, _cell_bytes, affine_cells
from studio.core.calibration.knapsack import solve
from studio.core.defaults import AFFINE_BITS
from studio.core.errors import StudioError
from studio.core.policy.grid_paint import apply_stroke
from studio.core.policy.bit_policy import Quantize
from studio.core.project import Project


def propose_sensitive(project: Project, target_bytes: int, sensitivity: dict,
                      options: tuple[int, ...] = AFFINE_BITS) -> BudgetProposal:
    cells = affine_cells(project)
    est = project.estimate
    fixed = est.total_bytes - sum(est.unit_bytes[i] for members in cells.values() for i in members)
    current = {cell: project.plan.decisions[members[0]].bits for cell, members in cells.items()}
    table = {}
    sizes = {}
    for cell, members in cells.items():
        measured = sensitivity.get(cell, {})
        bits_here = [b for b in options if b in measured] if all(b in measured for b in options) else [current[cell]]
        sizes[cell] = {b: _cell_bytes(project, members, b) for b in set(bits_here) | {current[cell]}}
        table[cell] = [(b, sizes[cell][b], measured.get(b, 0.0)) for b in bits_here]
    least = fixed + sum(min(b for _, b, _ in options) for options in table.values())
    if least > target_bytes:
        raise StudioError(f"{target_bytes / 1e9:.4f} GB is below the smallest this policy can reach "
                          f"({least / 1e9:.4f} GB with every measured cell at its fewest bits); start from a "
                          "policy that quantizes more, e.g. --policy uniform-2bit.")
    choice, cell_bytes, after = solve(table, target_bytes - fixed)

    def error(cell, bits):
        return sensitivity.get(cell, {}).get(bits, 0.0)

    order = sorted(choice, key=lambda c: (c[0], -1 if c[1] is None else c[1]))
    changes = [CellChange(c[0], c[1], current[c], choice[c], sizes[c][current[c]], sizes[c][choice[c]],
                          error(c, current[c]), error(c, choice[c]))
               for c in order if choice[c] != current[c]]
    group = {cell: project.plan.decisions[members[0]].group_size for cell, members in cells.items()}
    stroke = {(c.role, c.layer): Quantize(c.new_bits, group[(c.role, c.layer)], "affine") for c in changes}
    policy = apply_stroke(project.policy, stroke, project.grid, note="fit to budget (output-space sensitivity)")
    policy = policy.with_rules(policy.rules, name=f"{project.policy.name} (fit to {target_bytes / 1e9:.3f} GB)")
    before = sum(error(c, current[c]) for c in cells)
    return BudgetProposal(policy, changes, fixed + cell_bytes, target_bytes, before, after)
