"""Fit to a budget: the proposal stays within it, spends it where error falls most, and says what changed."""

import pytest

from studio.core.budget.propose import propose, quantized_cells
from studio.core.errors import StudioError
from studio.core.project import Project
from test_estimate import _tiny_moe


def _errors(project, sensitive_role="attn_v"):
    # A steep error curve; one role is ten times as sensitive as the rest.
    return {cell: {b: (10.0 if cell[0] == sensitive_role else 1.0) * 2.0 ** -b for b in (2, 3, 4, 5, 6, 8)}
            for cell in quantized_cells(project)}


def test_proposal_fits_budget_and_matches_its_estimate(tmp_path):
    project = Project.open(_tiny_moe(tmp_path), "config-i")
    target = int(project.estimate.total_bytes * 0.8)
    proposal = propose(project, target, _errors(project))
    assert proposal.total_bytes <= target
    # The proposal's own figure is the estimate of the policy it proposes.
    assert project.set_policy(proposal.policy).total_bytes == proposal.total_bytes
    assert proposal.changes and proposal.error_after > 0


def test_sensitive_role_gets_more_bits(tmp_path):
    project = Project.open(_tiny_moe(tmp_path), "uniform-4bit")
    target = int(project.estimate.total_bytes * 0.85)
    proposal = propose(project, target, _errors(project))
    bits = {(c.role, c.layer): c.new_bits for c in proposal.changes}
    v_bits = [bits.get(("attn_v", layer), 4) for layer in range(6)]
    q_bits = [bits.get(("attn_q", layer), 4) for layer in range(6)]
    assert min(v_bits) > max(q_bits)


def test_bigger_budget_lowers_error(tmp_path):
    project = Project.open(_tiny_moe(tmp_path), "config-i")
    errors = _errors(project)
    small = propose(project, int(project.estimate.total_bytes * 0.7), errors)
    large = propose(project, int(project.estimate.total_bytes * 1.3), errors)
    assert large.error_after < small.error_after and large.total_bytes > small.total_bytes


def test_unreachable_budget_is_one_sentence(tmp_path):
    project = Project.open(_tiny_moe(tmp_path), "config-i")
    with pytest.raises(StudioError, match="below the smallest this policy can reach"):
        propose(project, 1000, _errors(project))


def test_the_smallest_size_is_decided_by_sizes_alone(tmp_path):
    from studio.core.budget.propose import check_feasible, smallest_bytes

    project = Project.open(_tiny_moe(tmp_path), "config-i")
    least = smallest_bytes(project)
    check_feasible(project, least)
    with pytest.raises(StudioError, match="below the smallest this policy can reach"):
        check_feasible(project, least - 1)
    # It is what a proposal reaches when every byte counts: every affine cell at 2-bit.
    tight = propose(project, least, _errors(project))
    assert tight.total_bytes == least == project.set_policy(tight.policy).total_bytes
    assert {c.new_bits for c in tight.changes} == {2}


def test_the_solver_finds_the_optimum_where_a_greedy_order_is_a_trap(tmp_path):
    """The best gain per byte first (the old greedy) spends the budget on a small upgrade and then cannot
    afford the one that matters: with room for the embedding's 2 -> 3 only, upgrading expert_down first
    (a better ratio, less gain) leaves 1.0 of error where 0.6 was the least possible."""
    from studio.core.budget.propose import _cell_bytes, affine_cells, smallest_bytes

    project = Project.open(_tiny_moe(tmp_path), "uniform-4bit")
    cells = affine_cells(project)
    big, small = ("embedding", None), ("expert_down", 0)
    costs = {cell: {b: 0.0 for b in (2, 3, 4, 5, 6, 8)} for cell in cells}
    costs[big] = {b: 1.0 if b == 2 else 0.0 for b in (2, 3, 4, 5, 6, 8)}
    costs[small] = {b: 0.6 if b == 2 else 0.0 for b in (2, 3, 4, 5, 6, 8)}

    def extra(cell, bits):
        return _cell_bytes(project, cells[cell], bits) - _cell_bytes(project, cells[cell], 2)

    assert extra(small, 3) < extra(big, 3) < extra(small, 3) + extra(big, 3)  # room for one of the two
    assert 0.6 / extra(small, 3) > 1.0 / extra(big, 3)  # and the worse one has the better ratio
    budget = smallest_bytes(project) + extra(big, 3)
    proposal = propose(project, budget, costs)
    assert proposal.total_bytes <= budget
    assert proposal.error_after == pytest.approx(0.6)


def test_sensitivities_are_summed_in_the_report_not_taken_as_squared_errors(tmp_path):
    """Output-space sensitivities add across cells (the solver sums them): the report's figures are
    those sums, not an element-weighted RMS as for the survey's mean squared relative errors."""
    from studio.core.budget.report import error_text, fit_to_budget

    project = Project.open(_tiny_moe(tmp_path), "config-i")
    costs = _errors(project)
    fit = fit_to_budget(project, int(project.estimate.total_bytes * 0.8), costs, additive=True)
    assert fit.error_before == pytest.approx(fit.proposal.error_before)
    assert fit.error_after == pytest.approx(fit.proposal.error_after)
    for row in fit.rows:
        changed = [c for c in fit.proposal.changes if (c.role, c.old_bits, c.new_bits) ==
                   (row.role, row.old_bits, row.new_bits)]
        assert row.error_after == pytest.approx(sum(c.new_error for c in changed))
    assert fit.to_dict()["error_combined"] == "sum" and error_text(0.01234, True) == "0.0123 nats"
    rms = fit_to_budget(project, int(project.estimate.total_bytes * 0.8), costs)
    assert rms.to_dict()["error_combined"] == "rms" and error_text(0.01234) == "1.23%"
