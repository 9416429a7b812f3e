"""The window driven from the keyboard, through Qt's shortcut map as a person's keys go.

QTest key clicks on a focused widget of the active window pass through the
shortcut map first, so a key bound twice logs "Ambiguous shortcut overload",
which fails the test (pyproject: qt_log_level_fail).
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtTest import QTest

from studio.views import shortcuts
from test_gui_fixtures import activate, open_window, studio_settings, tiny_m3  # noqa: F401

CTRL = Qt.KeyboardModifier.ControlModifier
SHIFT = Qt.KeyboardModifier.ShiftModifier


def _paint_one_cell(qtbot, window):
    editor = window.editor
    QTest.keyClick(editor.grid, Qt.Key.Key_2)  # the 2-bit brush, by its key
    assert editor.grid.brush is not None and editor.grid.brush.bits == 2
    index = editor.grid_model.index_of("attn_q", 1)
    QTest.mouseClick(editor.grid.viewport(), Qt.MouseButton.LeftButton, pos=editor.grid.visualRect(index).center())
    assert editor.grid_model.action("attn_q", 1)[0].bits == 2


def test_redo_keys_each_registered_once():
    texts = [k.toString() for k in shortcuts.redo()]
    assert "Ctrl+Shift+Z" in texts and "Ctrl+Y" in texts and len(texts) == len(set(texts))
    assert "Ctrl+Q" in [k.toString() for k in shortcuts.quit_app()]


def test_undo_and_both_redo_keys(qtbot, tiny_m3):
    window = open_window(qtbot, tiny_m3)
    activate(qtbot, window, window.editor.grid)
    stack = window.controller.undo_stack
    before = window.editor.grid_model.action("attn_q", 1)[0]
    _paint_one_cell(qtbot, window)
    for key, modifiers, index in ((Qt.Key.Key_Z, CTRL, 0), (Qt.Key.Key_Z, CTRL | SHIFT, 1),
                                  (Qt.Key.Key_Z, CTRL, 0), (Qt.Key.Key_Y, CTRL, 1)):
        QTest.keyClick(window.editor.grid, key, modifiers)
        assert stack.index() == index, QKeySequence(key | modifiers).toString()
    QTest.keyClick(window.editor.grid, Qt.Key.Key_Z, CTRL)
    assert window.editor.grid_model.action("attn_q", 1)[0] == before
    window.shutdown()


def test_window_keys_are_bound_once(qtbot, tiny_m3):
    """No key sequence is bound to two actions of the window (Qt would do nothing and warn)."""
    from PySide6.QtGui import QAction

    window = open_window(qtbot, tiny_m3)
    seen = {}
    for action in window.findChildren(QAction):
        if action.shortcutContext() != Qt.ShortcutContext.WindowShortcut:
            continue
        for key in action.shortcuts():
            assert key.toString() not in seen, (key.toString(), action.text(), seen.get(key.toString()))
            seen[key.toString()] = action.text()
    window.shutdown()


def test_ctrl_enter_sends_in_the_chat_and_converts_elsewhere(qtbot, tiny_m3):
    window = open_window(qtbot, tiny_m3)
    started = []
    window.convert.convert_button.setEnabled(True)
    window.convert_action.triggered.connect(lambda: started.append(True))
    window.tabs.setCurrentWidget(window.chat)
    chat = window.chat
    sent = []
    chat.input.send_requested.connect(lambda: sent.append(chat.input.toPlainText()))
    activate(qtbot, window, chat.input)
    QTest.keyClicks(chat.input, "hello")
    for key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
        QTest.keyClick(chat.input, key, CTRL)
    assert sent == ["hello", "hello"] and not started  # the chat got it, not the window's Convert
    window.shutdown()


def test_ctrl_tab_and_ctrl_page_down_switch_tabs(qtbot, tiny_m3):
    window = open_window(qtbot, tiny_m3)
    activate(qtbot, window, window.editor.grid)
    tabs = window.tabs
    assert tabs.currentWidget() is window.editor
    QTest.keyClick(window.editor.grid, Qt.Key.Key_Tab, CTRL)
    assert tabs.currentWidget() is window.chat
    QTest.keyClick(window.focusWidget(), Qt.Key.Key_PageDown, CTRL)
    assert tabs.currentWidget() is window.evaluate
    QTest.keyClick(window.focusWidget(), Qt.Key.Key_PageDown, CTRL)
    assert tabs.currentWidget() is window.editor
    QTest.keyClick(window.focusWidget(), Qt.Key.Key_PageUp, CTRL)
    assert tabs.currentWidget() is window.evaluate
    QTest.keyClick(window.focusWidget(), Qt.Key.Key_Backtab, CTRL | SHIFT)
    assert tabs.currentWidget() is window.chat
    window.shutdown()
