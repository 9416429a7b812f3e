"""Editing a policy the way the grid paints it: append rules, then drop dead ones.

A paint stroke is a mapping {(role, layer or None): action}. It becomes one rule
per (role, action) appended at the end of the policy (later rules win), with a
`list` of layers, or `none` for the row of units outside any layer. Rules that
no longer decide any (role, layer) cell are removed, and neighbouring rules with
the same roles and action merge, so a long painting session keeps a short,
readable policy whose decisions are exactly those painted.
"""

from __future__ import annotations

from collections import defaultdict

from studio.core.policy import Action, Layers, Policy, Rule
from studio.core.roles import ROLE_BY_KEY

Cell = tuple[str, "int | None"]


def _domain(num_layers: int) -> list[Cell]:
    layers: list[int | None] = [None, *range(num_layers)]
    return [(role, layer) for role in ROLE_BY_KEY for layer in layers]


def deciding_rules(policy: Policy, num_layers: int) -> set[int]:
    """Indices of the rules that decide at least one (role, layer) cell."""
    used: set[int] = set()
    for role, layer in _domain(num_layers):
        _, index = policy.decide(role, layer, num_layers)
        if index is not None:
            used.add(index)
    return used


def _mergeable(a: Rule, b: Rule) -> bool:
    return (a.roles == b.roles and a.action == b.action and a.note == b.note
            and a.layers.kind == "list" and b.layers.kind == "list")


def compact(policy: Policy, num_layers: int) -> Policy:
    """The same decisions with fewer rules: drop rules that decide nothing, then
    merge adjacent `list` rules that share roles and action."""
    used = deciding_rules(policy, num_layers)
    rules = [rule for i, rule in enumerate(policy.rules) if i in used]
    merged: list[Rule] = []
    for rule in rules:
        if merged and _mergeable(merged[-1], rule):
            items = tuple(sorted(set(merged[-1].layers.items) | set(rule.layers.items)))
            merged[-1] = Rule(rule.roles, Layers("list", items=items), rule.action, rule.note)
        else:
            merged.append(rule)
    return policy.with_rules(merged)


def apply_stroke(policy: Policy, stroke: dict[Cell, Action], num_layers: int, note: str = "painted") -> Policy:
    """The policy with every cell of `stroke` set to its action. Cells that already
    have that action add nothing."""
    layered: dict[tuple[str, Action], set[int]] = defaultdict(set)
    outside: dict[tuple[str, Action], bool] = {}
    for (role, layer), action in stroke.items():
        if policy.decide(role, layer, num_layers)[0] == action:
            continue
        if layer is None:
            outside[(role, action)] = True
        else:
            layered[(role, action)].add(layer)
    if not layered and not outside:
        return policy
    rules = list(policy.rules)
    for (role, action), layers in layered.items():
        rules.append(Rule((role,), Layers("list", items=tuple(sorted(layers))), action, note))
    for role, action in outside:
        rules.append(Rule((role,), Layers("none"), action, note))
    return compact(policy.with_rules(rules), num_layers)


def set_row(policy: Policy, layer: int | None, roles, action: Action, num_layers: int) -> Policy:
    """Every role of `roles` in one layer (or outside the layers) to `action`."""
    return apply_stroke(policy, {(role, layer): action for role in roles}, num_layers, note="row set")


def set_column(policy: Policy, role: str, action: Action, num_layers: int) -> Policy:
    """One role in every layer and outside them to `action`: one rule for all layers."""
    rules = [*policy.rules, Rule((role,), Layers("all"), action, "column set")]
    return compact(policy.with_rules(rules), num_layers)


def same_decisions(a: Policy, b: Policy, num_layers: int) -> bool:
    return all(a.decide(r, l, num_layers)[0] == b.decide(r, l, num_layers)[0] for r, l in _domain(num_layers))
