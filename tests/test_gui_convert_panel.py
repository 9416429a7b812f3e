"""The convert panel as people meet it: a stray Space on a long job, an existing folder, a cancel."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QMessageBox

from test_gui_fixtures import activate, m3_replica, open_window, studio_settings, tiny_m3  # noqa: F401


def test_space_on_convert_asks_first_with_the_size_and_time(qtbot, m3_replica, tmp_path):
    window = open_window(qtbot, m3_replica)
    panel = window.convert
    panel.output.setText(str(tmp_path / "m3-out"))
    activate(qtbot, window, panel.convert_button)
    QTest.keyClick(panel.convert_button, Qt.Key.Key_Space)
    box = panel.question
    assert isinstance(box, QMessageBox) and box.isVisible() and not panel.busy
    text = box.text()
    from studio.views.convert_confirm import TYPICAL_RATE, duration

    minutes = duration(window.controller.project.estimate.source_bytes / TYPICAL_RATE)
    assert "167.07 GB" in text and "443.96 GB" in text and f"about {minutes} at a typical" in text
    assert box.defaultButton() is box.button(QMessageBox.StandardButton.Cancel)
    qtbot.waitUntil(lambda: box.focusWidget() is not None)
    assert box.focusWidget() is box.button(QMessageBox.StandardButton.Cancel)
    QTest.keyClick(box.focusWidget(), Qt.Key.Key_Space)  # a second stray Space lands on Cancel
    qtbot.waitUntil(lambda: panel.question is None)
    assert not panel.busy and not (tmp_path / "m3-out").exists()
    window.shutdown()


def test_an_existing_folder_names_the_overwrite_box_in_full(qtbot, tiny_m3, tmp_path):
    window = open_window(qtbot, tiny_m3, size=(1280, 800))
    panel = window.convert
    panel.quiet = True
    out = tmp_path / "a-rather-long-output-folder-name-that-a-person-might-well-choose" / "mlx"
    out.mkdir(parents=True)
    panel.output.setText(str(out))
    assert not panel.start()
    message = panel.message
    assert "Tick Overwrite" in message.text() and "--force" not in message.text()
    qtbot.waitUntil(lambda: message.height() >= message.heightForWidth(message.width()))  # wrapped, not cut
    assert message.width() <= panel.width()
    window.shutdown()
