"""Painting a policy: strokes append rules, compaction keeps decisions exactly."""

from __future__ import annotations

import json

from studio.core.policy.bit_policy import Drop, Keep, Layers, Policy, Quantize, Rule, load_preset, policy_from_dict
from studio.core.policy.grid import stack_grid
from studio.core.policy.grid_paint import apply_stroke, compact, deciding_rules, same_decisions, set_column, set_row

N = 60
GRID = stack_grid(N)


def test_stroke_sets_exactly_the_painted_cells():
    base = load_preset("config-i")
    stroke = {("expert_gate", 10): Quantize(4), ("expert_gate", 11): Quantize(4), ("embedding", None): Drop()}
    out = apply_stroke(base, stroke, GRID)
    for (role, layer), action in stroke.items():
        assert out.decide(role, layer, N)[0] == action
    for role, layer in [("expert_gate", 12), ("expert_up", 10), ("lm_head", None), ("attn_q", 10)]:
        assert out.decide(role, layer, N)[0] == base.decide(role, layer, N)[0]
    new = out.rules[len(base.rules):]
    assert {r.layers.kind for r in new} == {"list", "none"}
    assert any(r.layers.items == (10, 11) for r in new)


def test_noop_stroke_returns_the_same_policy():
    base = load_preset("config-i")
    assert apply_stroke(base, {("attn_q", 20): Quantize(4, 64)}, GRID) is base


def test_overridden_rules_are_removed_and_neighbours_merge():
    base = Policy("t", (Rule(("*",), Layers("all"), Keep()),))
    p = apply_stroke(base, {("attn_q", 3): Quantize(2)}, GRID)
    p = apply_stroke(p, {("attn_q", 4): Quantize(2)}, GRID)
    assert len(p.rules) == 2  # the two list rules merged
    assert p.rules[-1].layers.items == (3, 4)
    p = apply_stroke(p, {("attn_q", 3): Quantize(8), ("attn_q", 4): Quantize(8)}, GRID)
    assert all(r.action != Quantize(2) for r in p.rules)  # fully overridden, gone
    assert deciding_rules(p, GRID) == set(range(len(p.rules)))


def test_compact_keeps_every_decision():
    base = load_preset("config-i")
    noisy = base.with_rules([*base.rules, Rule(("attention",), Layers("all"), Quantize(4))])
    assert same_decisions(compact(noisy, GRID), noisy, GRID)
    assert len(compact(noisy, GRID).rules) < len(noisy.rules)


def test_row_and_column():
    base = load_preset("config-i")
    row = set_row(base, 30, ["attn_q", "expert_down"], Quantize(6), GRID)
    assert row.decide("attn_q", 30, N)[0] == Quantize(6)
    assert row.decide("expert_down", 30, N)[0] == Quantize(6)
    assert row.decide("attn_q", 31, N)[0] == Quantize(4)
    col = set_column(base, "expert_down", Keep("float16"), GRID)
    assert all(col.decide("expert_down", l, N)[0] == Keep("float16") for l in [None, 0, 30, 59])
    assert col.rules[-1].layers.kind == "all"


def test_painted_policy_round_trips_through_json():
    base = load_preset("config-i")
    p = apply_stroke(base, {("expert_gate", 5): Quantize(3, 32), ("router", None): Drop()}, GRID)
    again = policy_from_dict(json.loads(p.to_json()))
    assert same_decisions(p, again, GRID)


def test_the_dense_mlp_down_column_is_not_the_mlp_down_group():
    """"mlp_down" names the group of every down projection (expert, shared, dense); setting the Dense
    MLP down column also set every expert-down and shared-down cell before painting named the role
    alone ("role:mlp_down")."""
    base = load_preset("config-i")
    for out in (set_column(base, "mlp_down", Quantize(8, 64), GRID),
                apply_stroke(base, {("mlp_down", 5): Quantize(8, 64)}, GRID)):
        assert out.decide("mlp_down", 5, N)[0] == Quantize(8, 64)
        for role in ("expert_down", "shared_down"):
            assert out.decide(role, 5, N)[0] == base.decide(role, 5, N)[0] == Quantize(3, 64), role
        loaded = policy_from_dict(json.loads(out.to_json()))
        assert same_decisions(loaded, out, GRID) and "role:mlp_down" in out.to_json()
