"""Saved policies are compact and decide every tensor as the painted policy did (issue 18).

On the demo model and on a full-scale MiniMax-M3 header replica: painting sessions
(strokes one layer at a time, interleaved roles, rectangles, row and column sets)
are compacted, saved, loaded back and compared unit by unit.
"""

from __future__ import annotations

import random

import pytest

from studio.core.bundled import resource
from studio.core.policy.bit_policy import Drop, Keep, Quantize, load_policy_file, load_preset
from studio.core.policy.compact import compact, same_unit_decisions
from studio.core.policy.grid_paint import apply_stroke, set_column, set_row
from studio.core.project import Project

BRUSHES = [Quantize(b, 64) for b in (2, 3, 4, 5, 6, 8)] + [Keep(), Keep("float16"), Drop(), Quantize(4, 32)]


@pytest.fixture(scope="module")
def demo():
    return Project.open(resource("demo_model"), "config-i")


@pytest.fixture(scope="module")
def m3(m3_replica_mxfp8):
    return Project.open(m3_replica_mxfp8, "config-i")


def saved_and_loaded(project, policy, tmp_path):
    """The policy as Save writes it, read back; and checked against `policy` for every unit."""
    path = tmp_path / "policy.json"
    compact(policy, project.grid).save(path)
    loaded = load_policy_file(path)
    assert same_unit_decisions(loaded, policy, project.grid)
    project.set_policy(policy)
    painted = list(project.plan.decisions)
    project.set_policy(loaded)
    assert [(d.action, d.bits, d.group_size, d.mode, d.dtype) for d in project.plan.decisions] == \
        [(d.action, d.bits, d.group_size, d.mode, d.dtype) for d in painted]
    project.set_policy(load_preset("config-i"))
    return loaded


def lists_a_run(policy) -> bool:
    """A `list` of layers that holds two consecutive layers (a range would say it)."""
    return any(rule.layers.kind == "list" and any(b - a == 1 for a, b in zip(rule.layers.items, rule.layers.items[1:]))
               for rule in policy.rules)


def session(project, seed: int, strokes: int):
    """A person's painting: cells, rectangles, layer-by-layer drags, row and column sets."""
    rng = random.Random(seed)
    grid = project.grid
    cells = list(grid.cells)
    layers = [layer for layer in grid.layers if layer is not None]
    policy = project.policy
    for _ in range(strokes):
        brush = rng.choice(BRUSHES)
        kind = rng.random()
        if kind < 0.1:
            policy = set_column(policy, rng.choice(grid.roles), brush, grid)
        elif kind < 0.2:
            layer = rng.choice(grid.layers)
            policy = set_row(policy, layer, [r for r, l in cells if l == layer], brush, grid)
        elif kind < 0.5:  # a rectangle of roles by layers
            r0, r1 = sorted(rng.sample(range(len(grid.roles)), 2))
            l0 = rng.randrange(len(layers))
            l1 = min(len(layers), l0 + rng.randint(1, 12))
            stroke = {(role, layer): brush for role in grid.roles[r0:r1 + 1] for layer in layers[l0:l1]
                      if (role, layer) in grid.cells}
            policy = apply_stroke(policy, stroke, grid)
        else:  # one cell
            policy = apply_stroke(policy, {rng.choice(cells): brush}, grid)
    return policy


def test_a_preset_saves_as_itself(demo, m3, tmp_path):
    for project in (demo, m3):
        for name in ("config-i", "mixed-3-6", "uniform-4bit"):
            preset = load_preset(name)
            assert compact(preset, project.grid).rules == preset.rules, name


def test_layer_by_layer_strokes_save_as_one_rule_per_role(m3, tmp_path):
    """Painting a column one cell at a time, roles interleaved, left a rule per stroke listing layers."""
    grid, policy = m3.grid, m3.policy
    eight = Quantize(8, 64)
    for layer in range(60):
        for role in ("attn_q", "attn_k"):
            policy = apply_stroke(policy, {(role, layer): eight}, grid)
    for layer in range(10, 41):
        for role in ("expert_down", "attn_o"):
            policy = apply_stroke(policy, {(role, layer): Quantize(5, 64)}, grid)
    assert len(policy.rules) > len(m3.policy.rules) + 4  # what painting alone leaves
    loaded = saved_and_loaded(m3, policy, tmp_path)
    assert len(loaded.rules) <= len(m3.policy.rules) + 3, [r.label() for r in loaded.rules]
    assert not lists_a_run(loaded)
    labels = [r.label() for r in loaded.rules]
    assert "attn_q, attn_k @ all layers -> 8-bit g64" in labels  # role-wide: every layer agrees
    assert any("expert_down" in label and "layers 10-40 -> 5-bit g64" in label for label in labels)


@pytest.mark.parametrize("seed", range(4))
def test_painting_sessions_save_compact_and_load_back_identical_on_the_demo(demo, tmp_path, seed):
    policy = session(demo, seed, 60)
    loaded = saved_and_loaded(demo, policy, tmp_path)
    assert len(loaded.rules) <= len(policy.rules)
    assert not lists_a_run(loaded)


@pytest.mark.parametrize("seed", range(2))
def test_painting_sessions_save_compact_and_load_back_identical_on_m3(m3, tmp_path, seed):
    policy = session(m3, seed, 60)
    loaded = saved_and_loaded(m3, policy, tmp_path)
    assert len(loaded.rules) <= len(policy.rules)
    assert not lists_a_run(loaded)
