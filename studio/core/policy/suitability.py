"""Does a policy suit the model it is applied to?

Config-I is written for Mixture-of-Experts models: its `mlp_gate_up` and
`mlp_down` rules put every MLP projection at 2-3 bits, which sparse experts
tolerate (each token passes through few of them) but a dense model's MLPs do
not: on a pretrained 135M llama, Config-I came out both larger and far worse
than uniform 4-bit. The test is on the plan, not on the preset's name, so a
saved or edited Config-I-like policy is caught too: a dense model whose MLP
projections get fewer bits than its attention.
"""

from __future__ import annotations

from studio.core.policy.plan import Plan
from studio.core.model.roles import ROLE_BY_KEY
from studio.core.model.unit import Unit

DENSE_PRESET = "uniform-4bit"   # what a dense model opens with in the window
MOE_PRESET = "config-i"
EXPERT_FAMILIES = ("expert_gate_up", "expert_down")


def is_moe(units: list[Unit]) -> bool:
    """Whether the model has routed experts."""
    return any(unit.role in ROLE_BY_KEY and ROLE_BY_KEY[unit.role].family in EXPERT_FAMILIES for unit in units)


def suitable_preset(units: list[Unit]) -> str:
    """The preset a model should start from: Config-I for MoE, uniform 4-bit for dense models."""
    return MOE_PRESET if is_moe(units) else DENSE_PRESET


def _min_bits(plan: Plan, family: str) -> int | None:
    bits = [d.bits for u, d in plan.rows()
            if d.action == "quantize" and u.role in ROLE_BY_KEY and ROLE_BY_KEY[u.role].family == family]
    return min(bits) if bits else None


def moe_policy_on_dense(plan: Plan) -> str:
    """One sentence when the plan treats a dense model's MLPs as MoE experts, else ""."""
    if is_moe(plan.units):
        return ""
    mlp, attention = _min_bits(plan, "dense_mlp"), _min_bits(plan, "attention")
    if mlp is None or attention is None or mlp >= attention:
        return ""
    return (f"{plan.policy.name} is meant for Mixture-of-Experts models, and this model is dense: it puts the "
            f"MLP projections at {mlp}-bit, below attention ({attention}-bit), which costs a dense model more "
            f"quality than it saves; {DENSE_PRESET} suits it better.")


def policy_warnings(plan: Plan) -> list[str]:
    """What to say about this policy on this model: the policy's own warning, then the fit checks."""
    return [text for text in (plan.policy.warning, moe_policy_on_dense(plan)) if text]


def rules_matching_nothing(policy, grid) -> list[int]:
    """Indices of the rules whose roles and layers select no cell of this model (a router or
    indexer rule on a dense model, vision on a text-only one): they do nothing here."""
    cells = list(grid.cells)
    return [i for i, rule in enumerate(policy.rules)
            if not any(rule.matches(role, layer, grid.num_layers) for role, layer in cells)]
