"""QAbstractItemModelTester over every model of the window: tree, filter, grid, rules."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QModelIndex

from studio.core.project import Project
from studio.views import item_roles
from studio.views.controller import ProjectController
from studio.views.policy_grid import PolicyGridModel
from studio.views.rules_view import RulesModel
from studio.views.tensor_model import DECISION, TensorFilterModel, TensorTreeModel
from test_gui_fixtures import QT_MARKS, studio_settings, tiny_m3  # noqa: F401

pytestmark = QT_MARKS


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
