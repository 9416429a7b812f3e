"""Unsaved policy edits: Ctrl+Q asks Save / Discard / Cancel, and a crashed session comes back."""

from __future__ import annotations

import json

from PySide6.QtCore import Qt, QTimer
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox

from studio import settings
from studio.core.policy.bit_policy import load_policy_file
from studio.views import app as app_module
from test_gui_fixtures import activate, open_window, studio_settings, tiny_m3  # noqa: F401

CTRL = Qt.KeyboardModifier.ControlModifier


def _drag(qtbot, window, role, rows):
    """Press on the first row's cell and drag down to the last one, as a hand does."""
    grid = window.editor.grid
    model = window.editor.grid_model
    first, last = (grid.visualRect(model.index_of(role, layer)).center() for layer in (rows[0], rows[-1]))
    QTest.mousePress(grid.viewport(), Qt.MouseButton.LeftButton, pos=first)
    QTest.mouseMove(grid.viewport(), last)
    QTest.mouseRelease(grid.viewport(), Qt.MouseButton.LeftButton, pos=last)


def _paint(qtbot, window):
    activate(qtbot, window, window.editor.grid)
    QTest.keyClick(window.editor.grid, Qt.Key.Key_3)
    _drag(qtbot, window, "attn_q", [0, 2])
    assert [window.editor.grid_model.action("attn_q", layer)[0].bits for layer in range(3)] == [3, 3, 3]


def _quit_and_answer(qtbot, window, button, save_as=None) -> str:
    """Ctrl+Q, then click `button` in the question that comes up (and name the file if it asks)."""
    QTest.keyClick(window.editor.grid, Qt.Key.Key_Q, CTRL)
    box = window.session.question
    assert isinstance(box, QMessageBox) and box.isVisible() and window.isVisible()
    text = box.text()
    if save_as is not None:
        def name_the_file():
            dialog = QApplication.activeModalWidget()
            if isinstance(dialog, QFileDialog):
                dialog.selectFile(str(save_as))
                dialog.accept()
            else:
                QTimer.singleShot(20, name_the_file)
        QTimer.singleShot(0, name_the_file)
    QTest.mouseClick(box.button(button), Qt.MouseButton.LeftButton)
    return text


def test_quit_with_unsaved_edits_asks_and_cancel_keeps_them(qtbot, tiny_m3):
    window = open_window(qtbot, tiny_m3)
    _paint(qtbot, window)
    text = _quit_and_answer(qtbot, window, QMessageBox.StandardButton.Cancel)
    assert "unsaved edits (1 step)" in text
    assert window.isVisible() and window.session.question is None and window.editor.grid_model.action("attn_q", 1)[0].bits == 3
    window.shutdown()


def test_quit_save_writes_the_policy_and_closes(qtbot, tiny_m3, tmp_path):
    window = open_window(qtbot, tiny_m3, policy="uniform-4bit")
    _paint(qtbot, window)
    target = tmp_path / "mine.json"
    _quit_and_answer(qtbot, window, QMessageBox.StandardButton.Save, save_as=target)
    qtbot.waitUntil(lambda: not window.isVisible())
    saved = load_policy_file(target)
    assert saved.decide("attn_q", 1, window.controller.num_layers)[0].bits == 3
    assert settings.get(settings.RECOVERY) == ""


def test_quit_discard_closes_and_nothing_comes_back(qtbot, tiny_m3):
    window = open_window(qtbot, tiny_m3)
    _paint(qtbot, window)
    assert settings.get(settings.RECOVERY)  # recorded while edited
    _quit_and_answer(qtbot, window, QMessageBox.StandardButton.Discard)
    qtbot.waitUntil(lambda: not window.isVisible())
    assert settings.get(settings.RECOVERY) == ""


def test_opening_another_model_asks_first(qtbot, tiny_m3, tmp_path):
    window = open_window(qtbot, tiny_m3)
    _paint(qtbot, window)
    assert not window.open_model(str(tiny_m3))  # asks; nothing is opened yet
    box = window.session.question
    QTest.mouseClick(box.button(QMessageBox.StandardButton.Discard), Qt.MouseButton.LeftButton)
    assert window.controller.undo_stack.count() == 0  # opened afresh once the edits were let go
    assert window.editor.grid_model.action("attn_q", 1)[0].bits != 3
    window.shutdown()


def test_quit_without_edits_asks_nothing(qtbot, tiny_m3):
    window = open_window(qtbot, tiny_m3)
    activate(qtbot, window, window.editor.grid)
    QTest.keyClick(window.editor.grid, Qt.Key.Key_Q, CTRL)
    assert not window.isVisible()


def test_edits_come_back_after_a_crash(qtbot, tiny_m3, monkeypatch):
    window = open_window(qtbot, tiny_m3)
    _paint(qtbot, window)
    record = json.loads(settings.get(settings.RECOVERY))
    assert record["model"] == str(tiny_m3.resolve())
    window.shutdown()  # the process dies here: no closeEvent, the record stays
    monkeypatch.setattr(app_module, "demo_model_path", lambda: None)
    again = app_module.build_window(None, None)  # a plain relaunch opens the model the edits belong to
    qtbot.addWidget(again)
    assert again.controller.project.inventory.root.resolve() == tiny_m3.resolve()
    assert [again.editor.grid_model.action("attn_q", layer)[0].bits for layer in range(3)] == [3, 3, 3]
    assert "Recovered" in again.statusBar().currentMessage()
    again.controller.undo_stack.undo()  # the recovery is one undoable step
    assert again.editor.grid_model.action("attn_q", 1)[0].bits != 3
    again.shutdown()
