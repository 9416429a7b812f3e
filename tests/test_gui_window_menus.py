"""The window's own menus and status (issue 18): another model starts clean, File > Publish,
Help, Settings, where file dialogs start, the output folder's name, status messages."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication

from studio import settings
from studio.views.help_dialogs import SettingsDialog
from studio.views.publish_dialog import PublishDialog
from test_gui_fixtures import open_window, studio_settings, tiny_m3, tiny_model_path  # noqa: F401


def _paint_row_one(window) -> None:
    editor = window.editor
    editor.set_all("row", 1, editor.brushes.paint_actions()[0])
    window.controller.flush()


def test_another_model_starts_clean_unless_the_policy_is_carried(qtbot, request, tiny_m3):
    other = tiny_model_path(request, "qwen3_moe")
    window = open_window(qtbot, tiny_m3)
    try:
        window.editor.bar.apply_preset("uniform-4bit")
        window.editor.errors.status.setText("surveyed 120 tensors (0.3 s)")  # the previous model's survey line
        for label in window.evaluate.values.values():  # the previous model's figures
            label.setText("0.123")
        window.evaluate.plots.kl_plot.setXRange(-0.6, 9.4, padding=0)  # and its axes
        window.chat.set_compare(True)
        window.chat._sides[1].path, window.chat._sides[1].loaded = "/elsewhere/B", True
        window.chat._sides[1].label.setText("B: another model")

        assert window.open_model(str(other))
        assert window.controller.policy_source == "config-i"  # clean: not the previous model's preset
        assert window.editor.bar.preset.currentData() == "config-i"
        assert window.policy_label.text() == "Policy: config-i"
        assert window.editor.errors.status.text() == ""
        assert not window.chat.compare and window.chat._sides[1].label.text() == "no model"
        assert not window.chat._sides[1].loaded and window.chat._sides[1].path == ""
        assert all(label.text() == "–" for label in window.evaluate.values.values())
        assert [round(v, 3) for v in window.evaluate.plots.kl_plot.viewRange()[0]] == [0, 1]

        window.editor.bar.apply_preset("uniform-8bit")
        window.carry_action.trigger()  # File > Keep this policy for the next model
        assert settings.get(settings.CARRY_POLICY)
        assert window.open_model(str(tiny_m3))
        assert window.controller.policy_source == "uniform-8bit"
        assert window.editor.grid_model.action("attn_q", 1)[0].bits == 8
    finally:
        window.shutdown()


def test_a_model_opened_under_a_policy_file_names_no_preset(qtbot, tiny_m3, tmp_path):
    window = open_window(qtbot, tiny_m3)
    try:
        _paint_row_one(window)
        path = tmp_path / "mine.json"
        assert window.editor.bar.save_policy(str(path))
        assert window.open_model(str(tiny_m3), str(path))
        assert window.policy_label.text() == "Policy: mine.json"
        assert window.editor.bar.preset.currentIndex() == -1  # not "config-i" beside mine.json
        assert window.editor.bar.preset.currentText() == ""
    finally:
        window.shutdown()


def test_file_publish_opens_the_dialog_for_any_converted_folder(qtbot, tiny_m3, tmp_path):
    window = open_window(qtbot, tiny_m3)
    try:
        titles = [a.text() for a in window.menuBar().actions()[0].menu().actions()]
        assert "&Publish a converted folder…" in titles
        dialog = window.publish_folder(str(tmp_path))
        assert isinstance(dialog, PublishDialog) and dialog.isVisible() and dialog.folder == str(tmp_path)
        dialog.reject()
    finally:
        window.shutdown()


def test_help_lists_the_real_shortcuts_and_about_opens(qtbot, tiny_m3):
    window = open_window(qtbot, tiny_m3)
    try:
        menus = [a.text() for a in window.menuBar().actions()]
        assert menus[-1] == "&Help"
        dialog = window.show_shortcuts()
        rows = dict(dialog.rows())
        assert rows["Open model"].startswith("Ctrl+O") and rows["Keyboard shortcuts"] == "F1"
        assert "Ctrl+Return" in rows["Convert"] and "Ctrl+Z" in rows["Undo"]
        window.open_action.setShortcuts([])  # the list is made from the actions, not written by hand
        again = dict(window.show_shortcuts().rows())
        assert "Open model" not in again
        box = window.show_about()
        assert box.isVisible() and "Config-I Studio" in box.text() and "MLX" in box.text()
        box.close()
    finally:
        window.shutdown()


def test_settings_theme_is_applied_and_remembered(qtbot, tiny_m3):
    app = QApplication.instance()
    before = app.palette()
    dialog = SettingsDialog()
    qtbot.addWidget(dialog)
    try:
        dialog.theme.setCurrentIndex(dialog.theme.findData("dark"))
        assert settings.get(settings.THEME) == "dark"
        assert app.palette().color(QPalette.ColorRole.Window).lightness() < 100
        dialog.theme.setCurrentIndex(dialog.theme.findData("light"))
        assert app.palette().color(QPalette.ColorRole.Window).lightness() > 150
        assert SettingsDialog().theme.currentData() == "light"
    finally:
        app.setPalette(before)
        app.setStyleSheet("")


def test_dialogs_start_home_or_in_the_last_folder_and_save_suggests_a_name(qtbot, tiny_m3, tmp_path):
    window = open_window(qtbot, tiny_m3)
    try:
        assert settings.start_folder(settings.MODEL_DIR) == str(Path.home())  # never the package or cwd
        assert window.editor.bar.suggested_file() == str(Path.home() / f"{tiny_m3.name}-config-i.json")
        assert window.editor.bar.save_policy(str(tmp_path / "x.json"))
        window.editor.bar.apply_preset("uniform-4bit")
        assert window.editor.bar.suggested_file() == str(tmp_path / f"{tiny_m3.name}-uniform-4bit.json")
        settings.put(settings.MODEL_DIR, str(tmp_path / "gone"))
        assert settings.start_folder(settings.MODEL_DIR) == str(Path.home())
    finally:
        window.shutdown()


def test_the_output_folder_follows_the_preset_until_the_user_names_one(qtbot, tiny_m3, tmp_path):
    window = open_window(qtbot, tiny_m3)
    try:
        output = window.convert.output
        assert output.text().endswith(f"{tiny_m3.name}-config-i-mlx")
        window.editor.bar.apply_preset("uniform-4bit")
        assert output.text().endswith(f"{tiny_m3.name}-uniform-4bit-mlx")
        _paint_row_one(window)  # an edit keeps the preset's name
        assert output.text().endswith(f"{tiny_m3.name}-uniform-4bit-mlx")
        output.setText(str(tmp_path / "mine"))
        window.editor.bar.apply_preset("uniform-8bit")
        assert output.text() == str(tmp_path / "mine")
    finally:
        window.shutdown()


def test_a_long_status_message_stops_before_the_policy_name(qtbot, tiny_m3):
    window = open_window(qtbot, tiny_m3, size=(1024, 700))
    try:
        status = window.statusBar()
        status.showMessage("Opened with uniform-4bit: a very long note about the model " * 6, 5000)
        qtbot.wait(50)
        message = status.message_label
        assert message.isVisible() and not window.model_label.isVisible()
        assert message.geometry().right() < window.policy_label.geometry().left()
        assert status.currentMessage().startswith("Opened with")
        status.clearMessage()
        qtbot.waitUntil(lambda: window.model_label.isVisible() and not message.isVisible())
    finally:
        window.shutdown()
