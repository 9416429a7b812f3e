"""QAbstractItemModelTester over every model of the window: tree, filter, grid, rules."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QModelIndex

from studio.core.project import Project
from studio.views import item_roles
from studio.views.controller import ProjectController
from studio.views.policy_grid import PolicyGridModel
from studio.views.rules_view import RulesModel
from studio.views.tensor_filter import TensorFilterModel
from studio.views.tensor_model import DECISION, ERROR, TensorTreeModel
from test_gui_fixtures import m3_replica, open_window, studio_settings, tiny_m3  # noqa: F401



@pytest.fixture
def project(tiny_m3):
    return Project.open(tiny_m3)


def _first_unit(model, parent=QModelIndex()):
    for row in range(model.rowCount(parent)):
        index = model.index(row, 0, parent)
        if index.data(item_roles.NODE_KIND) == "unit":
            return index
        found = _first_unit(model, index)
        if found is not None:
            return found
    return None


def test_tree_model(qtmodeltester, project):
    model = TensorTreeModel()
    model.set_project(project)
    unit = _first_unit(model)
    assert model.canFetchMore(unit)
    model.fetchMore(unit)
    assert model.rowCount(unit) == len(project.units[unit.data(item_roles.UNIT_INDEX)].sources)
    qtmodeltester.check(model)


def test_tree_lazy_experts_and_live_columns(qtbot, project):
    model = TensorTreeModel()
    model.set_project(project)
    stacked = next(i for i, u in enumerate(project.units) if u.transform == "stack")
    index = model.unit_index(stacked)
    assert index.isValid() and model.rowCount(index) == 0 and model.hasChildren(index)
    model.fetchMore(index)
    assert model.rowCount(index) == project.units[stacked].experts
    changed = []
    model.dataChanged.connect(lambda a, b, roles: changed.append((a.column(), b.column())))
    resets = []
    model.modelReset.connect(lambda: resets.append(1))
    model.policy_updated()
    assert changed and not resets
    assert all(DECISION <= a <= b for a, b in changed)


def test_filter_model(qtmodeltester, project):
    model = TensorTreeModel()
    model.set_project(project)
    # Load every unit's tensors first: the tester fetches lazily from inside the
    # proxy's own insert signals otherwise, which it then reports as nested inserts.
    for i in range(len(project.units)):
        model.fetchMore(model.unit_index(i))
    proxy = TensorFilterModel()
    proxy.setSourceModel(model)
    proxy.set_filter(text="q_proj")
    assert proxy.rowCount() > 0
    qtmodeltester.check(proxy)
    proxy.set_filter(text="", role="attn_q", layer=1)
    assert proxy.rowCount() == 1
    layer = proxy.index(0, 0)
    block = proxy.index(0, 0, layer)
    assert proxy.rowCount(block) == 1
    assert proxy.index(0, 0, block).data(item_roles.ROLE_KEY) == "attn_q"
    proxy.set_filter(role=None, layer="any")
    assert proxy.rowCount() == model.rowCount()


def test_grid_model(qtmodeltester, project):
    controller = ProjectController()
    controller.set_project(project)
    grid = PolicyGridModel(controller)
    grid.set_project(project)
    assert grid.rowCount() == project.num_layers + 1
    assert grid.columnCount() == len(project.roles_present())
    assert grid.index_of("embedding", None).data() == "8"
    qtmodeltester.check(grid)


def test_rules_model(qtmodeltester, project):
    rules = RulesModel()
    rules.set_policy(project.policy)
    rules.set_highlight(2)
    assert rules.rowCount() == len(project.policy.rules)
    qtmodeltester.check(rules)


# --------------------------------------------------------------------------- live updates in the window


def _signals(model):
    """Every dataChanged of `model` as (parent node, first row, last row, first column, last column)."""
    seen = []
    model.dataChanged.connect(lambda a, b, roles: seen.append(
        (model.node(a.parent()), a.row(), b.row(), a.column(), b.column())))
    return seen


def _window(qtbot, path):
    return open_window(qtbot, path, "uniform-4bit", size=(1600, 1000))


def _change_policy(qtbot, window, preset="uniform-2bit"):
    """A policy change as the window makes it: the estimate now, the tree within TREE_FOLLOW_MS."""
    from studio.core.policy.bit_policy import load_preset

    window.controller.replace_policy(load_preset(preset), "test")
    window.controller.flush()
    assert window._tree_timer.isActive()
    qtbot.waitUntil(lambda: not window._tree_timer.isActive(), timeout=2000)


def test_policy_change_tells_only_the_parents_on_screen(qtbot, tiny_m3):
    window = _window(qtbot, tiny_m3)
    model, view, proxy = window.tree.model, window.tree.view, window.tree.proxy
    seen, resets = _signals(model), []
    model.modelReset.connect(lambda: resets.append(1))

    # Collapsed: one ranged signal over the layer rows, the live columns only.
    _change_policy(qtbot, window)
    assert seen == [(model.root, 0, model.rowCount() - 1, DECISION, ERROR)]

    # Expanding a layer catches its rows up: one signal for that parent.
    seen.clear()
    layer1 = next(n for n in model.root.children if n.layer == 1)
    view.expand(proxy.mapFromSource(model.createIndex(layer1.row, 0, layer1)))
    assert seen == [(layer1, 0, len(layer1.children) - 1, DECISION, ERROR)]

    # Now a change tells the root and the open layer, nothing under collapsed nodes.
    seen.clear()
    _change_policy(qtbot, window, "uniform-4bit")
    assert sorted((p.name for p, *_ in seen)) == sorted(["", layer1.name])
    assert all(r0 == 0 and r1 == len(p.children) - 1 and (c0, c1) == (DECISION, ERROR) for p, r0, r1, c0, c1 in seen)
    assert not resets
    # What the open rows show is the new decision.
    block = layer1.children[0]
    assert model.index(block.row, DECISION, model.createIndex(layer1.row, 0, layer1)).data() == "4-bit"
    window.shutdown()


def test_policy_change_on_the_full_m3_replica_is_a_few_signals(qtbot, m3_replica):
    window = _window(qtbot, m3_replica)
    model, view = window.tree.model, window.tree.view
    view.expandToDepth(1)  # every layer and block open: ~300 parents with rows
    qtbot.wait(10)
    parents = sum(1 for _ in model._parents())
    assert parents > 250
    seen = _signals(model)
    _change_policy(qtbot, window)
    assert 1 <= len(seen) <= 25  # only the parents of the ~45 rows on screen
    assert {(c0, c1) for *_, c0, c1 in seen} == {(DECISION, ERROR)}
    # Scrolling down brings stale parents into view: each catches up once, then never again.
    seen.clear()
    view.verticalScrollBar().setValue(view.verticalScrollBar().maximum() // 2)
    caught_up = len(seen)
    assert 1 <= caught_up <= 25
    view.verticalScrollBar().setValue(view.verticalScrollBar().maximum() // 2 + 1)
    assert len(seen) <= caught_up + 1
    window.shutdown()
