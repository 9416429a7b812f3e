"""Room to work on the full MiniMax-M3 at a laptop's 1280x800 and the default 1600x1000."""

from __future__ import annotations

import pytest

from studio.views.main_window import MainWindow
from studio.views.tensor_model import DECISION, NAME
from test_gui_fixtures import m3_replica, studio_settings  # noqa: F401


def _window(qtbot, path, size):
    window = MainWindow()
    qtbot.addWidget(window)
    window.resize(*size)
    window.show()
    qtbot.waitExposed(window)
    assert window.open_model(str(path))
    qtbot.waitUntil(lambda: window._docks_sized)
    qtbot.wait(200)  # the dock layout settles over a few event-loop turns
    return window


def _label_rows(size_panel) -> list[float]:
    return [y for y, _ in size_panel.role_plot.getAxis("left")._tickLevels[0]]


@pytest.mark.parametrize("size", [(1280, 800), (1600, 1000)])
def test_every_grid_column_tree_size_and_role_label_has_room(qtbot, m3_replica, size):
    window = _window(qtbot, m3_replica, size)
    grid = window.editor.grid
    qtbot.waitUntil(lambda: grid.horizontalScrollBar().maximum() == 0)  # all 20 role columns on screen
    tree = window.tree.view

    def tree_fits():  # names and decisions not cut
        decision = tree.header().sectionViewportPosition(DECISION) + tree.columnWidth(DECISION)
        return tree.columnWidth(NAME) >= 150 and decision <= tree.viewport().width()

    qtbot.waitUntil(tree_fits)
    plot = window.size.role_plot
    rows = sorted(_label_rows(window.size))
    bars = window.size._bars  # a bar per role, or per role family where the roles' names do not fit
    pixels_a_row = (plot.height() - 40) / len(bars)
    line = plot.fontMetrics().height()
    assert len(rows) == len(bars) >= 5  # every bar named
    assert all((b - a) * pixels_a_row >= line for a, b in zip(rows, rows[1:]))
    window.shutdown()


def test_the_chat_tab_leaves_the_docks_alone_now_and_after_a_relaunch(qtbot, m3_replica):
    window = _window(qtbot, m3_replica, (1280, 800))
    widths = {name: dock.width() for name, dock in window.docks.items()}
    window.tabs.setCurrentWidget(window.chat)
    qtbot.wait(50)
    window.tabs.setCurrentWidget(window.editor)
    assert {name: dock.width() for name, dock in window.docks.items()} == widths
    window.close()
    again = _window(qtbot, m3_replica, (1280, 800))
    assert abs(again.docks["tensors"].width() - widths["tensors"]) <= 2
    again.shutdown()
