"""Multi-token-prediction layers (layer >= num_hidden_layers) are cells a policy decides like any other.

DeepSeek-V3 and MiniMax checkpoints carry them. Every unit's grid cell, painted,
must change that unit's decision; a budget proposal that changes an MTP cell must
be the policy it estimates.
"""

from __future__ import annotations

from studio.core.budget.propose import propose, quantized_cells
from studio.core.policy.grid import cell_of
from studio.core.policy.grid_paint import apply_stroke, compact, same_decisions
from studio.core.policy.plan import make_plan
from studio.core.policy.bit_policy import Drop, Keep, Layers, Policy, Quantize, Rule, load_preset
from studio.core.project import Project


def _deepseek(tiny_model):
    """The tiny DeepSeek-V3 under uniform 4-bit, its MTP layer quantized too (presets drop it, as mlx-lm does)."""
    policy = load_preset("uniform-4bit")
    policy = policy.with_rules([*policy.rules, Rule(("mtp",), Layers("all"), Quantize(4))])
    return Project.open(tiny_model("deepseek_v3"), policy)


def test_a_budget_proposal_that_changes_mtp_bits_is_what_its_policy_estimates(tiny_model):
    project = _deepseek(tiny_model)
    mtp_cells = [cell for cell in quantized_cells(project) if cell[0] == "mtp"]
    assert mtp_cells and all(layer >= project.num_layers for _, layer in mtp_cells)
    # MTP is the most sensitive role here, so the proposal moves its bits away from 4.
    errors = {cell: {b: (100.0 if cell[0] == "mtp" else 1.0) * 2.0 ** -b for b in (2, 3, 4, 5, 6, 8)}
              for cell in quantized_cells(project)}
    proposal = propose(project, int(project.estimate.total_bytes * 0.9), errors)
    assert any(change.role == "mtp" for change in proposal.changes)
    assert project.set_policy(proposal.policy).total_bytes == proposal.total_bytes


def test_every_units_cell_painted_decides_that_unit(tiny_model):
    project = _deepseek(tiny_model)
    grid = project.grid
    assert grid.extra_layers == (project.num_layers,)  # the MTP layer has a row of its own
    assert grid.row_name(project.num_layers).endswith("(multi-token prediction)")
    for cell, members in grid.cells.items():
        assert all(cell_of(project.units[i]) == cell for i in members)
        policy = apply_stroke(project.policy, {cell: Drop()}, grid)
        plan = make_plan(project.inventory, policy, project.units)
        assert {plan.decisions[i].action for i in members} == {"drop"}, cell
        others = [i for i in range(len(project.units)) if cell_of(project.units[i]) != cell]
        assert all(plan.decisions[i].action == project.plan.decisions[i].action for i in others), cell


def test_compact_keeps_rules_that_decide_only_mtp_layers(tiny_model):
    project = _deepseek(tiny_model)
    n, grid = project.num_layers, project.grid
    # Rule 1 decides only the MTP row: every other row is overridden by rules 2 and 3.
    policy = Policy("t", (Rule(("*",), Layers("all"), Keep()),
                          Rule(("mtp",), Layers("all"), Quantize(3)),
                          Rule(("*",), Layers("range", start=0, stop=n - 1), Quantize(4)),
                          Rule(("*",), Layers("none"), Quantize(8))))
    compacted = compact(policy, grid)
    assert compacted.rules == policy.rules
    assert same_decisions(compacted, policy, grid)
    mtp = [i for i, u in enumerate(project.units) if u.role == "mtp" and u.quantizable(64)]
    assert {make_plan(project.inventory, compacted, project.units).decisions[i].bits for i in mtp} == {3}
    # Painting the MTP row away and back leaves a policy that still decides it.
    painted = apply_stroke(policy, {("mtp", n): Quantize(6)}, grid)
    assert painted.decide("mtp", n, n)[0] == Quantize(6)
