"""The window as a whole: --screenshot, the start page, the full M3 replica, closing."""

from __future__ import annotations

import time

from PySide6.QtGui import QImage

from studio.main import main
from studio.views import app as app_module
from studio.views.main_window import MainWindow
from test_gui_fixtures import QT_MARKS, m3_replica, studio_settings, tiny_m3  # noqa: F401

pytestmark = QT_MARKS


def _not_blank(path) -> None:
    image = QImage(str(path))
    assert not image.isNull() and image.width() >= 800 and image.height() >= 600
    colours = {image.pixel(x, y) for x in range(0, image.width(), 37) for y in range(0, image.height(), 29)}
    assert len(colours) > 20


def test_screenshot_writes_a_png_of_the_main_view(qtbot, tiny_m3, tmp_path):
    shot = tmp_path / "shot.png"
    assert main([str(tiny_m3), "--policy", "uniform-4bit", "--screenshot", str(shot)]) == 0
    assert shot.stat().st_size > 0
    _not_blank(shot)


def test_screenshot_of_a_missing_model_is_a_clear_error(qtbot, tmp_path, capsys):
    assert main([str(tmp_path / "nope"), "--screenshot", str(tmp_path / "x.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_start_page_without_a_model(qtbot, monkeypatch, tmp_path):
    monkeypatch.setattr(app_module, "demo_model_path", lambda: None)
    window = app_module.build_window(None, None)
    qtbot.addWidget(window)
    assert window.stack.currentWidget() is window.start
    assert not window.docks["tensors"].isVisibleTo(window)
    window.shutdown()


def test_recent_models_and_state_are_remembered(qtbot, tiny_m3):
    window = MainWindow()
    qtbot.addWidget(window)
    assert window.open_model(str(tiny_m3))
    window.close()
    again = MainWindow()
    qtbot.addWidget(again)
    assert again.start.recent.stringList()[0] == str(tiny_m3.resolve())
    again.shutdown()


def test_full_m3_replica_opens_and_scrolls(qtbot, m3_replica):
    window = MainWindow()
    qtbot.addWidget(window)
    window.resize(1600, 1000)
    started = time.perf_counter()
    assert window.open_model(str(m3_replica))
    window.show()
    qtbot.waitExposed(window)
    opened = time.perf_counter() - started
    assert len(window.controller.project.units) > 1000
    view = window.tree.view
    view.expandToDepth(1)
    bar = view.verticalScrollBar()
    started = time.perf_counter()
    for value in range(0, bar.maximum(), max(1, bar.maximum() // 40)):
        bar.setValue(value)
        view.viewport().repaint()
    scroll = time.perf_counter() - started
    assert opened < 20 and scroll < 20  # generous on a shared 2-core machine; bench/bench_gui.py measures
    window.shutdown()
