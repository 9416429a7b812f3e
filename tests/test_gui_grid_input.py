"""Painting the grid as people do: a drag past the bottom edge scrolls, and the keyboard alone paints."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest

from test_gui_fixtures import activate, m3_replica, open_window, studio_settings, tiny_m3  # noqa: F401

SHIFT = Qt.KeyboardModifier.ShiftModifier


def _bits(window, role, layer):
    action = window.editor.grid_model.action(role, layer)[0]
    return getattr(action, "bits", None)


def test_a_drag_past_the_bottom_edge_scrolls_and_paints_a_whole_column(qtbot, m3_replica):
    window = open_window(qtbot, m3_replica, size=(1280, 800))
    grid = window.editor.grid
    activate(qtbot, window, grid)
    QTest.keyClick(grid, Qt.Key.Key_8)
    model = window.editor.grid_model
    bar = grid.verticalScrollBar()
    assert bar.maximum() > 0  # 60 layers do not fit: the grid scrolls
    last_visible = grid.rowAt(grid.viewport().height() - 1)
    start = grid.visualRect(model.index_of("attn_q", 0)).center()
    QTest.mousePress(grid.viewport(), Qt.MouseButton.LeftButton, pos=start)
    below = QPoint(start.x(), grid.viewport().height() + 60)  # past the bottom edge, and held there
    QTest.mouseMove(grid.viewport(), below)
    # While the pointer waits below the grid, nothing out of view is painted ...
    painted = {layer for (role, layer) in grid.stroke()}
    assert max(painted) <= model.layers[last_visible]
    # ... and the grid scrolls, painting what comes into view, down to the last layer.
    qtbot.waitUntil(lambda: bar.value() == bar.maximum(), timeout=10000)
    qtbot.waitUntil(lambda: (("attn_q", 59) in grid.stroke()), timeout=5000)
    QTest.mouseRelease(grid.viewport(), Qt.MouseButton.LeftButton, pos=below)
    assert all(_bits(window, "attn_q", layer) == 8 for layer in range(60))
    assert window.controller.undo_stack.count() == 1  # one stroke, one undo step
    window.shutdown()


def test_space_paints_the_current_cell_and_a_shift_arrow_block(qtbot, tiny_m3):
    window = open_window(qtbot, tiny_m3)
    grid = window.editor.grid
    model = window.editor.grid_model
    activate(qtbot, window, grid)
    QTest.keyClick(grid, Qt.Key.Key_3)  # the 3-bit brush
    grid.setCurrentIndex(model.index_of("attn_q", 0))
    QTest.keyClick(grid, Qt.Key.Key_Space)
    assert _bits(window, "attn_q", 0) == 3
    QTest.keyClick(grid, Qt.Key.Key_Down)
    QTest.keyClick(grid, Qt.Key.Key_Down, SHIFT)
    QTest.keyClick(grid, Qt.Key.Key_Right, SHIFT)
    QTest.keyClick(grid, Qt.Key.Key_Return)
    for role in ("attn_q", "attn_k"):
        for layer in (1, 2):
            assert _bits(window, role, layer) == 3, (role, layer)
    assert _bits(window, "attn_k", 0) != 3
    assert window.controller.undo_stack.count() == 2  # one step a key press
    QTest.keyClick(grid, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert _bits(window, "attn_q", 1) != 3
    window.shutdown()


@pytest.mark.qt_log_ignore("propagateSizeHints", "does not support raise", "grabbing the keyboard")  # offscreen popups
def test_the_menu_key_sets_the_current_row_or_column(qtbot, tiny_m3):
    window = open_window(qtbot, tiny_m3)
    grid = window.editor.grid
    model = window.editor.grid_model
    activate(qtbot, window, grid)
    grid.setCurrentIndex(model.index_of("attn_v", 1))
    QTest.keyClick(grid, Qt.Key.Key_Menu)
    menu = window.editor._menu
    qtbot.waitUntil(menu.isVisible)
    assert [a.text() for a in menu.actions()][0].startswith("Set every layer of Attention V")
    QTest.keyClick(menu, Qt.Key.Key_Down)  # the column's entry
    QTest.keyClick(menu, Qt.Key.Key_Right)  # into its submenu, the first entry (2-bit)
    submenu = menu.actions()[0].menu()
    qtbot.waitUntil(submenu.isVisible)
    if submenu.activeAction() is None:
        QTest.keyClick(submenu, Qt.Key.Key_Down)
    QTest.keyClick(submenu, Qt.Key.Key_Return)
    assert all(_bits(window, "attn_v", layer) == 2 for layer in range(window.controller.num_layers))
    window.shutdown()


def test_the_current_cell_is_outlined_where_people_can_see_it(qtbot, tiny_m3):
    window = open_window(qtbot, tiny_m3)
    grid = window.editor.grid
    model = window.editor.grid_model
    activate(qtbot, window, grid)
    index = model.index_of("attn_q", 1)
    grid.setCurrentIndex(index)
    grid.clearSelection()
    rect = grid.visualRect(index)
    image = grid.viewport().grab(rect).toImage()
    edge = {image.pixelColor(x, y).name() for x in range(4, rect.width() - 4) for y in range(5)}
    inside = image.pixelColor(7, rect.height() // 2).name()
    assert {"#000000", "#ffffff"} <= edge  # black inside white: shows on dark and light cells alike
    assert inside not in ("#000000", "#ffffff")  # the cell's own colour shows inside the outline
    window.shutdown()


def test_heat_map_figures_fit_their_cells(qtbot):
    from PySide6.QtGui import QFont, QFontMetrics

    from studio.views.grid_view import fitted
    from studio.views.palette import error_text

    font = QFont()
    for error in (0.0088, 0.0094, 0.041, 0.35, 0.00012, 1.7, 2.2e-7):
        for width in (28, 32, 40):
            text, used = fitted(error_text(error, sign=False), font, width)
            assert QFontMetrics(used).horizontalAdvance(text) <= width, (error, width, text)
            assert text == error_text(error, sign=False)  # whole: no cell loses a digit
            assert "e" not in text  # never scientific notation
