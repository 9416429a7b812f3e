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
