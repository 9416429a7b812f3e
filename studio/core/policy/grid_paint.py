"""Editing a policy the way the grid paints it: append rules, then drop dead ones.

A paint stroke is a mapping {cell: action}, cells as `studio.core.policy.grid` defines
them. It becomes one rule per (role, action) appended at the end of the policy
(later rules win), with a `list` of layers, or `none` for the row of units
outside any layer. Rules that no longer decide any cell of the model's grid
(every role, every row, multi-token-prediction rows included) are removed, and
neighbouring rules with the same roles and action merge, so a long painting
session keeps a short, readable policy whose decisions are exactly those painted.
"""

from __future__ import annotations

from collections import defaultdict

from studio.core.policy.grid import Cell, Grid
from studio.core.policy.bit_policy import Action, Layers, Policy, Rule
from studio.core.model.roles import ROLE_BY_KEY, role_name


# The notes of the rules painting appends (Fit to budget's start with FIT_NOTE): what a saved policy
# writes afresh (studio.core.policy.compact).
PAINT_NOTES = ("painted", "row set", "column set")
FIT_NOTE = "fit to budget"


def _domain(grid: Grid) -> list[Cell]:
    # Every role, not only those present: a rule for a role this model lacks is kept.
    return [(role, layer) for role in ROLE_BY_KEY for layer in grid.layers]


def deciding_rules(policy: Policy, grid: Grid) -> set[int]:
    """Indices of the rules that decide at least one cell."""
    used: set[int] = set()
    for role, layer in _domain(grid):
        _, index = policy.decide(role, layer, grid.num_layers)
        if index is not None:
            used.add(index)
    return used


def _mergeable(a: Rule, b: Rule) -> bool:
    return (a.roles == b.roles and a.action == b.action and a.note == b.note
            and a.layers.kind == "list" and b.layers.kind == "list")


def compact(policy: Policy, grid: Grid) -> Policy:
    """The same decisions with fewer rules: drop rules that decide nothing, then
    merge adjacent `list` rules that share roles and action."""
    used = deciding_rules(policy, grid)
    rules = [rule for i, rule in enumerate(policy.rules) if i in used]
    merged: list[Rule] = []
    for rule in rules:
        if merged and _mergeable(merged[-1], rule):
            items = tuple(sorted(set(merged[-1].layers.items) | set(rule.layers.items)))
            merged[-1] = Rule(rule.roles, Layers("list", items=items), rule.action, rule.note)
        else:
            merged.append(rule)
    return policy.with_rules(merged)


def apply_stroke(policy: Policy, stroke: dict[Cell, Action], grid: Grid, note: str = "painted") -> Policy:
    """The policy with every cell of `stroke` set to its action. Cells that already
    have that action add nothing."""
    layered: dict[tuple[str, Action], set[int]] = defaultdict(set)
    outside: dict[tuple[str, Action], bool] = {}
    for (role, layer), action in stroke.items():
        if policy.decide(role, layer, grid.num_layers)[0] == action:
            continue
        if layer is None:
            outside[(role, action)] = True
        else:
            layered[(role, action)].add(layer)
    if not layered and not outside:
        return policy
    rules = list(policy.rules)
    for (role, action), layers in layered.items():
        rules.append(Rule((role_name(role),), Layers("list", items=tuple(sorted(layers))), action, note))
    for role, action in outside:
        rules.append(Rule((role_name(role),), Layers("none"), action, note))
    return compact(policy.with_rules(rules), grid)


def set_row(policy: Policy, layer: int | None, roles, action: Action, grid: Grid) -> Policy:
    """Every role of `roles` in one layer (or outside the layers) to `action`."""
    return apply_stroke(policy, {(role, layer): action for role in roles}, grid, note="row set")


def set_column(policy: Policy, role: str, action: Action, grid: Grid) -> Policy:
    """One role in every row to `action`: one rule for all layers."""
    rules = [*policy.rules, Rule((role_name(role),), Layers("all"), action, "column set")]
    return compact(policy.with_rules(rules), grid)


def same_decisions(a: Policy, b: Policy, grid: Grid) -> bool:
    n = grid.num_layers
    return all(a.decide(r, l, n)[0] == b.decide(r, l, n)[0] for r, l in _domain(grid))
