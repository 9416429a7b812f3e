"""The tensor tree's filter on the full MiniMax-M3 inventory, typed as a person types it."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex
from PySide6.QtTest import QTest

from studio.views import item_roles
from test_gui_fixtures import activate, m3_replica, open_window, studio_settings, tiny_m3  # noqa: F401


def _shown_units(panel) -> list[int]:
    """Units on rows the view shows (their parents expanded), walking the proxy."""
    view, proxy, units = panel.view, panel.proxy, []

    def walk(parent: QModelIndex):
        for row in range(proxy.rowCount(parent)):
            index = proxy.index(row, 0, parent)
            unit = index.data(item_roles.UNIT_INDEX)
            if unit is not None and unit >= 0:
                units.append(unit)
            elif view.isExpanded(index):
                walk(index)

    walk(QModelIndex())
    return units


def _type(qtbot, panel, text):
    panel.search.clear()
    panel.search.setFocus()
    QTest.keyClicks(panel.search, text)


def test_filter_matches_checkpoint_names_expands_and_counts(qtbot, m3_replica):
    window = open_window(qtbot, m3_replica)
    panel, project = window.tree, window.controller.project
    moe_layers = 57
    _type(qtbot, panel, "w2")  # the experts' down projection, by its checkpoint name
    units = _shown_units(panel)
    assert {project.units[u].role for u in units} == {"expert_down"} and len(units) == moe_layers
    layer_3 = panel.proxy.index(0, 0)
    assert layer_3.data() == "Layer 3  (1 of 20)" and panel.proxy.index(0, 0, layer_3).data() == "MoE  (1 of 8)"
    _type(qtbot, panel, "experts.7")
    assert {project.units[u].role for u in _shown_units(panel)} == {"expert_gate", "expert_up", "expert_down"}
    _type(qtbot, panel, "experts")  # the hint's own example: routed and shared experts alike
    roles = {project.units[u].role for u in _shown_units(panel)}
    assert {"expert_gate", "expert_down", "shared_gate", "shared_down"} <= roles
    panel.search.clear()
    assert "of" not in panel.proxy.index(0, 0).data()
    window.shutdown()


def test_clicking_a_grid_cell_opens_the_tree_down_to_its_units(qtbot, m3_replica):
    from PySide6.QtCore import Qt

    window = open_window(qtbot, m3_replica)
    grid, model = window.editor.grid, window.editor.grid_model
    window.editor.set_brush("S")
    QTest.mouseClick(grid.viewport(), Qt.MouseButton.LeftButton,
                     pos=grid.visualRect(model.index_of("expert_down", 5)).center())
    units = _shown_units(window.tree)
    project = window.controller.project
    assert len(units) == 1 and (project.units[units[0]].role, project.units[units[0]].layer) == ("expert_down", 5)
    window.shutdown()


def test_a_select_click_says_how_the_tree_is_filtered_and_esc_clears_it(qtbot, tiny_m3):
    from PySide6.QtCore import Qt

    window = open_window(qtbot, tiny_m3)
    panel, editor = window.tree, window.editor
    assert not panel.filter_row.isVisible()
    editor.set_brush("S")
    grid = editor.grid
    QTest.mouseClick(grid.viewport(), Qt.MouseButton.LeftButton, pos=grid.cell_rect("attn_q", 1).center())
    assert panel.proxy.role == "attn_q" and panel.proxy.layer == 1
    assert panel.filter_row.isVisible() and panel.filters.text() == "Filtered: layer 1, Attention Q"
    activate(qtbot, window, panel.view)  # shortcuts reach only the active window
    QTest.keyClick(panel.view, Qt.Key.Key_Escape)
    assert panel.proxy.role is None and panel.proxy.layer == "any" and not panel.filter_row.isVisible()
    QTest.keyClicks(panel.search, "q_proj")
    assert panel.filter_row.isVisible() and panel.filters.text() == "Filtered: \u201cq_proj\u201d"
    QTest.mouseClick(panel.clear_filters, Qt.MouseButton.LeftButton)
    assert panel.search.text() == "" and not panel.filter_row.isVisible()
    window.shutdown()
