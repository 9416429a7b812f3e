"""The tensor tree's columns in the dock the first layout gives it, at the laptop sizes people use."""

from __future__ import annotations

import pytest

from studio.views.tensor_model import DECISION, NAME
from test_gui_fixtures import open_window, studio_settings, tiny_m3  # noqa: F401


READABLE = 150  # px of name: the leaf of a vision unit's path ("…attn.qkv.weight") beside a scroll bar


@pytest.mark.parametrize("size", [(1280, 800), (1024, 700)])
def test_the_decision_column_is_in_view_without_scrolling(qtbot, tiny_m3, size):
    window = open_window(qtbot, tiny_m3, size=size)
    try:
        qtbot.waitUntil(lambda: window._docks_sized)
        window.docks["tensors"].raise_()
        tree = window.tree
        qtbot.waitUntil(tree.view.isVisible)
        qtbot.wait(50)
        view, header = tree.view, tree.view.header()

        columns = (NAME, DECISION)

        def in_view():
            shown = view.viewport().width()
            return all(0 <= header.sectionViewportPosition(column)
                       and header.sectionViewportPosition(column) + header.sectionSize(column) <= shown
                       for column in columns)

        assert in_view()
        assert header.sectionSize(NAME) >= READABLE  # the leaf of a unit's name is still readable
        tree._expand_to_units()  # a vertical scroll bar takes its width from the view: the name gives it up
        qtbot.waitUntil(lambda: view.verticalScrollBar().isVisible())
        qtbot.waitUntil(in_view)
        assert header.sectionSize(NAME) >= READABLE and view.horizontalScrollBar().value() == 0
        # The decision text of every unit fits its column (nothing elided).
        metrics = view.fontMetrics()
        model = tree.model
        widest = max(metrics.horizontalAdvance(model._decision_text(node))
                     for layer in model.root.children for block in layer.children for node in block.children)
        assert header.sectionSize(DECISION) >= widest + 8
    finally:
        window.shutdown()
