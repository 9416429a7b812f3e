"""The window as a whole: --screenshot, the start page, the full M3 replica, closing."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt

from PySide6.QtGui import QImage

from studio.main import main
from studio.views import app as app_module
from studio.views.main_window import MainWindow
from test_gui_fixtures import m3_replica, studio_settings, tiny_m3  # noqa: F401



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
    # A guard against a window that reads every tensor or repaints all rows, not a speed target
    # (bench/bench_gui.py measures: ~1 s); a loaded 2-core machine took 26 s.
    assert opened < 60 and scroll < 60
    window.shutdown()


def _axis_text(plot, name) -> str:
    from PySide6.QtGui import QTextDocument

    doc = QTextDocument()
    doc.setHtml(plot.getAxis(name).labelString())
    return doc.toPlainText().strip()


def test_size_plots_use_the_unit_of_the_model(qtbot, tiny_m3, m3_replica):
    window = MainWindow()
    qtbot.addWidget(window)
    assert window.open_model(str(tiny_m3))
    size = window.size
    assert size.unit == "MB"  # a 3 MB model
    assert _axis_text(size.role_plot, "bottom") == "MB (outline: source)"
    assert _axis_text(size.layer_plot, "left") == "MB"
    widths = size.role_bars.opts["width"]
    assert 0.01 < max(widths) < 1  # plotted in MB, not GB
    assert [label for _, label in size.layer_plot.getAxis("bottom")._tickLevels[0]] == ["0", "1", "2"]
    assert window.open_model(str(m3_replica))
    assert size.unit == "GB"
    assert _axis_text(size.role_plot, "bottom") == "GB (outline: source)"
    assert _axis_text(size.layer_plot, "left") == "GB"
    for plot, axis in ((size.role_plot, "bottom"), (size.layer_plot, "left")):
        size.show()
        plot.getAxis(axis).setRange(0, 1e-6)  # what made pyqtgraph write "(x1e-06)" before
        assert "x1e" not in plot.getAxis(axis).labelString()
    ticks = [int(label) for _, label in size.layer_plot.getAxis("bottom")._tickLevels[0]]
    assert ticks == list(range(0, 60, 10))
    window.shutdown()


def test_start_page_hides_the_docks_even_after_a_saved_layout(qtbot, monkeypatch, tiny_m3):
    first = MainWindow()
    qtbot.addWidget(first)
    assert first.open_model(str(tiny_m3))
    first.show()
    qtbot.waitExposed(first)
    first.close()  # saves a layout with the docks shown
    monkeypatch.setattr(app_module, "demo_model_path", lambda: None)
    window = app_module.build_window(None, None)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    assert window.stack.currentWidget() is window.start
    assert not any(dock.isVisible() for dock in window.docks.values())
    assert not window.convert_action.isEnabled() and not window.save_action.isEnabled()
    assert window.start.recent_view.isVisible()
    assert window.start.width() > 500 and window.start.recent_view.width() >= 500
    window.open_model(str(tiny_m3))
    assert window.convert_action.isEnabled() and all(dock.isVisible() for dock in window.docks.values())
    window.shutdown()


def test_dark_theme_reaches_the_tree_rows_and_the_plots(qtbot, tiny_m3):
    from PySide6.QtWidgets import QApplication

    from studio.views.theme import dark_palette

    app = QApplication.instance()
    old = app.palette()
    app.setPalette(dark_palette())
    try:
        window = MainWindow()  # built under a dark palette: no PaletteChange will come
        qtbot.addWidget(window)
        assert window.open_model(str(tiny_m3))
        window.show()
        qtbot.waitExposed(window)
        model = window.tree.model
        for row in range(model.rowCount()):
            background = model.index(row, 0).data(Qt.ItemDataRole.BackgroundRole)
            assert background.lightnessF() < 0.3, row  # rows on the dark base, not white
        assert window.size.role_plot.backgroundBrush().color().lightnessF() < 0.3
        window.tabs.setCurrentWidget(window.evaluate)
        panel = window.evaluate
        assert panel.plots.backgroundBrush().color().lightnessF() < 0.3
        assert panel.plots.kl_plot.getAxis("left").textPen().color().lightnessF() > 0.7
        shot = window.grab()
        assert not shot.isNull()
        window.shutdown()
    finally:
        app.setPalette(old)
