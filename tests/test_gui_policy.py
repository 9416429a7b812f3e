"""Painting the grid: a drag is one undo step, the estimate follows, undo restores it exactly."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication
from PySide6.QtTest import QTest

from studio.core.formatting import human_bytes
from studio.core.policy.bit_policy import Quantize
from studio.views.palette import action_short
from test_gui_fixtures import open_window, studio_settings, tiny_m3  # noqa: F401



@pytest.fixture
def window(qtbot, tiny_m3):
    w = open_window(qtbot, tiny_m3)
    yield w
    w.shutdown()


def _centre(view, role, layer) -> QPoint:
    return view.cell_rect(role, layer).center()


def test_drag_paints_cells_and_undo_restores_exactly(qtbot, window):
    editor, c = window.editor, window.controller
    view = editor.grid
    before = c.project.estimate.total_bytes
    assert c.policy.decide("expert_gate", 1, c.num_layers)[0] == Quantize(8, 64)
    editor.set_brush("2")
    changed = []
    editor.grid_model.dataChanged.connect(lambda a, b: changed.append((a.row(), a.column(), b.row(), b.column())))
    vp = view.viewport()
    start, end = _centre(view, "attn_q", 0), _centre(view, "attn_o", 0)
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    QTest.mouseMove(vp, end)
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, end)
    qtbot.waitUntil(lambda: c.project.policy is c.policy, timeout=2000)
    for role in ("attn_q", "attn_k", "attn_v", "attn_o"):
        assert c.policy.decide(role, 0, c.num_layers)[0] == Quantize(2, 64)
    after = c.project.estimate.total_bytes
    assert after < before
    assert c.undo_stack.count() == 1
    assert changed[-1] == (1, editor.grid_model.roles.index("attn_q"), 1, editor.grid_model.roles.index("attn_o"))
    assert window.size.total.text() == human_bytes(after) != human_bytes(before)  # the size panel followed
    c.undo_stack.undo()
    c.flush()
    assert c.project.estimate.total_bytes == before
    c.undo_stack.redo()
    c.flush()
    assert c.project.estimate.total_bytes == after


def test_shift_click_paints_a_rectangle_and_select_filters_the_tree(qtbot, window):
    editor, c = window.editor, window.controller
    view, vp = editor.grid, editor.grid.viewport()
    editor.set_brush("S")
    QTest.mouseClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, _centre(view, "attn_q", 0))
    assert window.tree.proxy.role == "attn_q" and window.tree.proxy.layer == 0
    assert c.undo_stack.count() == 0
    editor.set_brush("6")
    QTest.mouseClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ShiftModifier, _centre(view, "attn_v", 2))
    c.flush()
    for layer in (0, 1, 2):
        for role in ("attn_q", "attn_k", "attn_v"):
            assert c.policy.decide(role, layer, c.num_layers)[0] == Quantize(6, 64)
    assert c.undo_stack.count() == 1


def test_keys_rows_columns_presets_and_files(qtbot, window, tmp_path):
    editor, c = window.editor, window.controller
    editor.grid.setFocus()
    QTest.keyClick(editor.grid, Qt.Key.Key_D)
    assert editor.grid.brush is not None and editor.grid.brush.label() == "drop"
    editor.set_all("column", "expert_down", Quantize(4, 64))
    assert all(c.policy.decide("expert_down", l, c.num_layers)[0] == Quantize(4, 64) for l in range(c.num_layers))
    editor.set_all("row", 1, Quantize(5, 64))
    assert c.policy.decide("attn_q", 1, c.num_layers)[0] == Quantize(5, 64)
    path = tmp_path / "mine.json"
    assert editor.bar.save_policy(str(path))
    saved = c.policy
    editor.bar.apply_preset("uniform-4bit")
    assert c.policy.name != saved.name or c.policy.rules != saved.rules
    assert editor.bar.load_policy(str(path))
    assert c.policy.rules == saved.rules
    assert window.policy_label.text() == "Policy: mine.json"
    c.undo_stack.setIndex(0)
    c.flush()
    assert c.policy.name == "Config-I"


def test_tree_selection_highlights_the_grid_cell(qtbot, window):
    c = window.controller
    unit = next(i for i, u in enumerate(c.project.units) if u.role == "expert_down")
    window.tree.select_unit(unit)
    current = window.editor.grid.currentIndex()
    u = c.project.units[unit]
    assert window.editor.grid_model.cell(current) == (u.role, u.layer)


def test_hover_highlights_the_deciding_rule(qtbot, window):
    view = window.editor.grid
    seen = []
    view.hovered_rule.connect(seen.append)
    point = _centre(view, "router", 1)
    vp = view.viewport()
    move = QMouseEvent(QEvent.Type.MouseMove, QPointF(point), QPointF(vp.mapToGlobal(point)),
                       Qt.MouseButton.NoButton, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(vp, move)
    assert seen
    _, rule = window.controller.policy.decide("router", 1, window.controller.num_layers)
    assert window.editor.rules.rules.highlight == rule


@pytest.mark.qt_log_ignore("propagateSizeHints", "does not support raise", "grabbing the keyboard")  # offscreen popups
def test_header_menu_names_the_role_and_shows_each_choice_in_its_colour(qtbot, window):
    editor, c = window.editor, window.controller
    editor._header_menu("column", "attn_q")
    menu = editor._menu
    actions = [a for a in menu.actions() if not a.isSeparator()]
    title, choices = actions[0], actions[1:]
    assert title.text() == "Set every layer of Attention Q to" and not title.isEnabled()
    assert [a.text() for a in choices][:3] == ["2-bit g64", "3-bit g64", "4-bit g64"]
    assert all(not a.icon().isNull() for a in choices)
    image = choices[0].icon().pixmap(12, 12).toImage()
    assert image.pixelColor(6, 6).name() == "#440154"  # the 2-bit colour of the grid and the brushes
    choices[0].trigger()
    c.flush()
    assert all(c.policy.decide("attn_q", layer, c.num_layers)[0].bits == 2 for layer in range(c.num_layers))
    menu.close()
    editor._header_menu("row", None)
    assert editor._menu.actions()[0].text() == "Set every role outside the layers to"
    editor._menu.close()


@pytest.fixture
def deepseek_window(qtbot, request):
    from test_gui_fixtures import tiny_model_path

    w = open_window(qtbot, tiny_model_path(request, "deepseek_v3"), "uniform-4bit")
    yield w
    w.shutdown()


def test_painting_the_mtp_cell_changes_the_plan_and_the_tree_finds_it(qtbot, deepseek_window):
    # DeepSeek-V3 carries a multi-token-prediction layer after its decoder stack
    # (layer == num_hidden_layers). Its grid cell must decide its units.
    window = deepseek_window
    editor, c = window.editor, window.controller
    mtp = [i for i, u in enumerate(c.project.units) if u.role == "mtp"]
    assert mtp and all(c.project.units[i].layer >= c.num_layers for i in mtp)
    model = editor.grid_model
    (cell,) = [key for key, members in model.cells.items() if set(members) & set(mtp)]
    assert set(model.cells[cell]) == set(mtp)
    assert {c.project.plan.decisions[i].action for i in mtp} == {"drop"}  # the preset drops them, as mlx-lm does
    before = c.project.estimate.total_bytes
    editor.set_brush("8")
    vp, point = editor.grid.viewport(), _centre(editor.grid, *cell)
    QTest.mouseClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, point)
    c.flush()
    modules = [i for i in mtp if c.project.units[i].quantizable(64)]
    assert modules and all(c.project.plan.decisions[i].bits == 8 for i in modules)
    assert c.project.estimate.total_bytes == before + sum(c.project.estimate.unit_bytes[i] for i in mtp)
    assert model.index_of(*cell).data() == action_short(Quantize(8, 64))
    # Selecting the cell filters the tree to exactly the MTP units; selecting a unit finds the cell.
    editor.set_brush("S")
    # A second click on the same cell (the layout may have moved), late enough not to be a double-click.
    QTest.mouseClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, _centre(editor.grid, *cell),
                     QApplication.doubleClickInterval() + 50)
    shown = _visible_units(window.tree)
    assert shown == set(mtp)
    window.tree.select_unit(mtp[0])
    assert model.cell(editor.grid.currentIndex()) == cell



def test_tree_size_before_counts_each_source_tensor_once(qtbot, deepseek_window):
    # DeepSeek's kv_b_proj feeds two units; the tree's "Size before" adds up to the checkpoint.
    from studio.views import item_roles
    from studio.views.tensor_model import BEFORE

    c, tree = deepseek_window.controller, deepseek_window.tree.model
    rows = [tree.index(r, BEFORE) for r in range(tree.rowCount())]
    total = sum(index.data(item_roles.SORT_VALUE) for index in rows)
    assert total == sum(t.nbytes for t in c.project.inventory.tensors) == c.project.estimate.source_bytes
    assert rows[-1].siblingAtColumn(0).data().startswith("Layer 3 (multi-token prediction)")


def _visible_units(tree) -> set[int]:
    from studio.views import item_roles

    proxy, found = tree.proxy, set()

    def walk(parent):
        for row in range(proxy.rowCount(parent)):
            index = proxy.index(row, 0, parent)
            unit = index.data(item_roles.UNIT_INDEX)
            if unit is not None and unit >= 0:
                found.add(unit)
            walk(index)

    walk(proxy.index(-1, -1).parent())
    return found


@pytest.mark.qt_log_ignore("propagateSizeHints", "does not support raise", "grabbing the keyboard")  # offscreen popups
def test_uniform_2bit_and_config_i_on_a_dense_model_warn_in_the_window(qtbot, tiny_m3, tmp_path):
    from test_suitability import dense_llama

    # A dense model opens with the preset that suits it, and says why Config-I would not.
    window = open_window(qtbot, dense_llama(tmp_path / "dense"))
    notice = window.editor.notice
    assert window.controller.policy_source == "uniform-4bit" and not notice.isVisible()
    assert "Config-I is meant for Mixture-of-Experts" in window.statusBar().currentMessage()
    window.editor.bar.apply_preset("config-i")
    qtbot.waitUntil(notice.isVisible)  # once the estimate follows (throttled)
    assert "meant for Mixture-of-Experts models" in notice.text()
    assert window.size.context.currentData() == 8192  # the model's own limit, not 32K
    rules = window.editor.rules.rules
    router = next(i for i, r in enumerate(window.controller.policy.rules) if "router" in r.roles)
    attention = next(i for i, r in enumerate(window.controller.policy.rules) if "attention" in r.roles)
    assert router in rules.inactive and attention not in rules.inactive
    faint = rules.index(router, 1).data(Qt.ItemDataRole.ForegroundRole)
    assert faint is not None and rules.index(attention, 1).data(Qt.ItemDataRole.ForegroundRole) is None
    assert "Matches nothing in this model" in rules.index(router, 1).data(Qt.ItemDataRole.ToolTipRole)
    # On the MoE model Config-I says nothing; uniform-2bit, chosen from the list by keyboard, warns.
    assert window.open_model(str(tiny_m3))
    assert window.controller.policy_source == "config-i" and not notice.isVisible()
    combo = window.editor.bar.preset
    combo.setFocus()
    QTest.keyClick(combo, Qt.Key.Key_Space)  # open the list, as a person would
    view = combo.view()
    qtbot.waitUntil(view.isVisible)
    for _ in range(combo.count()):
        if view.currentIndex().data() == "uniform-2bit":
            break
        QTest.keyClick(view, Qt.Key.Key_Down)
    QTest.keyClick(view, Qt.Key.Key_Return)
    assert window.controller.policy.name == "Uniform 2-bit"
    qtbot.waitUntil(notice.isVisible)
    assert "known to break MiniMax-class MoE" in notice.text()
    window.shutdown()


def test_save_writes_a_compact_policy_that_loads_back_the_same(qtbot, window, tmp_path):
    """A stroke per cell, roles interleaved, saved: one rule per role where every layer agrees, runs as
    ranges, the same decision for every tensor; the rules table then shows the rules as saved."""
    from studio.core.policy.bit_policy import load_policy_file

    editor, c = window.editor, window.controller
    grid, model = editor.grid, editor.grid_model
    grid.setFocus()
    QTest.keyClick(grid, Qt.Key.Key_6)
    for layer in range(c.num_layers):
        for role in ("attn_q", "attn_v"):
            grid.setCurrentIndex(model.index_of(role, layer))
            QTest.keyClick(grid, Qt.Key.Key_Space)
    painted = c.policy
    assert c.undo_stack.count() == 2 * c.num_layers
    path = tmp_path / "painted.json"
    assert editor.bar.save_policy(str(path))
    saved = load_policy_file(path)
    assert len(saved.rules) < len(painted.rules)
    assert "attn_q, attn_v @ all layers -> 6-bit g64" in [r.label() for r in saved.rules]
    c.project.set_policy(painted)
    before = [(d.action, d.bits, d.group_size) for d in c.project.plan.decisions]
    c.project.set_policy(saved)
    assert [(d.action, d.bits, d.group_size) for d in c.project.plan.decisions] == before
    assert editor.rules.rules.rowCount() == len(saved.rules)
