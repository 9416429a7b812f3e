"""The window and the Hub: open a repo from the start page, convert it, publish the result."""

from __future__ import annotations

from PySide6.QtCore import Qt

from studio import settings
from test_gui_fixtures import studio_settings, tiny_m3  # noqa: F401

WAIT_MS = 120_000


def _window(qtbot):
    from studio.views.main_window import MainWindow

    window = MainWindow()
    qtbot.addWidget(window)
    window.resize(1400, 900)
    window.show()
    qtbot.waitExposed(window)
    return window


def test_open_from_the_hub_convert_and_publish(qtbot, hub, tiny_m3, tmp_path):
    hub.add_folder("org/tiny", tiny_m3)
    window = _window(qtbot)
    try:
        box = window.start.hub
        assert window.stack.currentWidget() is window.start and box.isVisible()

        # a repo that does not exist: one sentence in the box, nothing opened
        box.repo.setEditText("org/missing")
        box.open_button.click()
        qtbot.waitUntil(lambda: box.open_button.isEnabled(), timeout=WAIT_MS)  # the failure has arrived
        assert "neither a local folder nor a model repo" in box.status.text()
        assert window.controller.project is None

        box.repo.setEditText("org/tiny")
        with qtbot.waitSignal(box.opened, timeout=WAIT_MS):
            qtbot.keyClick(box.repo.lineEdit(), Qt.Key.Key_Return)
        project = window.controller.project
        assert project.inventory.source.repo_id == "org/tiny"
        assert window.windowTitle().startswith("tiny")
        assert settings.get(settings.RECENT_HUB_REPOS) == ["org/tiny"]
        assert box.repo.itemText(0) == "org/tiny"

        panel = window.convert
        panel.quiet = True
        assert "hf-cache" not in panel.output.text()  # never suggest writing into the download cache
        panel.output.setText(str(tmp_path / "tiny-mlx"))
        with qtbot.waitSignal(panel.conversion_finished, timeout=WAIT_MS):
            assert panel.start()
        assert panel.publish_button.isVisible()

        dialog = panel.open_publish()
        dialog.repo.setText("me/tiny-mlx")
        dialog.publish_button.click()
        qtbot.waitUntil(lambda: dialog.result is not None, timeout=WAIT_MS)
        assert sorted(hub.files("me/tiny-mlx")) == sorted(p.name for p in (tmp_path / "tiny-mlx").iterdir())
        assert "Published" in dialog.status.text() and dialog.bar.value() == 1000
        dialog.reject()
    finally:
        window.shutdown()
        window.close()


def test_file_menu_opens_a_hub_repo_in_a_dialog(qtbot, hub, tiny_m3):
    commit = hub.add_folder("org/tiny", tiny_m3)
    window = _window(qtbot)
    try:
        dialog = window.open_hub_dialog()
        dialog.box.repo.setEditText(f"org/tiny@{commit}")
        with qtbot.waitSignal(dialog.box.opened, timeout=WAIT_MS):
            dialog.box.open_button.click()
        assert not dialog.isVisible()
        assert window.controller.project.inventory.source.commit == commit
        assert window.start.hub.repo.itemText(0) == f"org/tiny@{commit}"  # remembered for the start page too
    finally:
        window.shutdown()
        window.close()
