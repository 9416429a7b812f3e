"""The cooperative worker, and a real conversion through it: to the end, and cancelled."""

from __future__ import annotations

import json
import time

import pytest

from studio.core.errors import StudioError
from studio.worker import CancelToken, Worker
from test_gui_fixtures import studio_settings, tiny_m3  # noqa: F401

WAIT_MS = 120_000


def _steps(n, delay=0.0, fail_at=None):
    def work(progress, cancel):
        for i in range(n):
            if cancel.cancelled:
                raise StudioError("cancelled by the user.")
            if i == fail_at:
                raise StudioError("the disk is full.")
            progress(i)
            time.sleep(delay)
        return n
    return work


def test_worker_succeeds_with_batched_progress(qtbot):
    worker = Worker(_steps(2000), interval_s=0.05)
    seen = []
    worker.progress.connect(seen.append)
    with qtbot.waitSignal(worker.succeeded, timeout=10000) as blocker:
        worker.start()
    assert blocker.args == [2000]
    assert seen[-1] == 1999 and len(seen) < 100
    assert worker.wait(5000)


def test_worker_reports_the_error_sentence(qtbot):
    worker = Worker(_steps(10, fail_at=3))
    with qtbot.waitSignal(worker.failed, timeout=10000) as blocker:
        worker.start()
    assert blocker.args == ["the disk is full."]
    worker.wait()


def test_worker_cancel_is_cooperative(qtbot):
    worker = Worker(_steps(10_000, delay=0.001), token=CancelToken())
    with qtbot.waitSignal(worker.progress, timeout=10000):
        worker.start()
    with qtbot.waitSignal(worker.cancelled, timeout=10000):
        worker.cancel()
    assert worker.stop(5000) and not worker.isRunning()


def test_worker_reports_unexpected_errors(qtbot, capsys):
    def boom(progress, cancel):
        raise ValueError("bad")
    worker = Worker(boom)
    with qtbot.waitSignal(worker.failed, timeout=10000) as blocker:
        worker.start()
    assert "ValueError: bad" in blocker.args[0]
    worker.wait()


@pytest.fixture
def window(qtbot, tiny_m3):
    from studio.views.main_window import MainWindow

    w = MainWindow()
    qtbot.addWidget(w)
    assert w.open_model(str(tiny_m3))
    w.convert.quiet = True
    yield w
    w.shutdown()


def test_conversion_runs_to_the_end_through_the_worker(qtbot, window, tmp_path):
    out = tmp_path / "out"
    panel = window.convert
    panel.output.setText(str(out))
    progress = []
    with qtbot.waitSignal(panel.conversion_finished, timeout=WAIT_MS) as blocker:
        assert panel.start()
        panel.worker.progress.connect(progress.append)
    result = blocker.args[0]
    assert (out / "config.json").exists()
    assert result.bytes_written > 0
    assert "quantization" in json.loads((out / "config.json").read_text())
    assert panel.chat_button.isVisibleTo(panel) and panel.bar.value() == 1000
    assert not panel.busy


def test_conversion_cancel(qtbot, window, tmp_path, monkeypatch):
    from studio.core import convert as convert_module

    real = convert_module.convert

    def slow(project, out, *, force=False, progress=None, cancel=None, **kw):
        def report(p):
            time.sleep(0.05)  # slow enough for Cancel to arrive mid-way
            progress(p)
        return real(project, out, force=force, progress=report, cancel=cancel, max_shard_bytes=20_000, **kw)

    monkeypatch.setattr(convert_module, "convert", slow)
    out = tmp_path / "out"
    panel = window.convert
    panel.output.setText(str(out))
    stopped = []
    panel.conversion_stopped.connect(stopped.append)
    with qtbot.waitSignal(panel.conversion_stopped, timeout=WAIT_MS,
                          raising=True):
        assert panel.start()
        panel.cancel()
    assert stopped and not panel.busy
    # Issue 18: "cancelled at 43%" in a greyed bar was unreadable; the bar is greyed and silent, the
    # message line says it in the normal text colour.
    assert panel.message.text().startswith("Cancelled at ") and "%: " in panel.message.text()
    assert not panel.bar.isEnabled() and not panel.bar.isTextVisible() and not panel.status.isVisible()
    assert not (out / "config.json").exists()
    assert panel.convert_button.isEnabled()


def test_a_finished_conversion_shows_its_errors_and_is_one_click_from_evaluating(qtbot, window, tmp_path, tiny_m3):
    from studio.core.quant_error.error_map import FILE_NAME
    from studio.views import item_roles
    from studio.views.tensor_model import ERROR

    out = tmp_path / "out"
    panel = window.convert
    panel.output.setText(str(out))
    panel.measure.setChecked(True)
    assert window.controller.errors is None
    with qtbot.waitSignal(panel.conversion_finished, timeout=WAIT_MS):
        assert panel.start()
    data = json.loads((out / FILE_NAME).read_text())
    c = window.controller
    # The conversion's figures are in the window: the controller, the grid and the tree's Error column.
    assert c.errors is not None and c.errors.source == f"out/{FILE_NAME}" and len(c.errors) == len(data)
    unit = next(i for i, u in enumerate(c.project.units) if u.path in data)
    figure = data[c.project.units[unit].path]["relative_error"]
    assert window.tree.model.unit_index(unit).siblingAtColumn(ERROR).data(item_roles.ERROR) == figure
    assert FILE_NAME in window.editor.errors.status.text()
    # The Evaluate tab holds the output and its source; the per-layer plot shows what was measured.
    assert panel.evaluate_button.isVisibleTo(panel)
    panel.evaluate_button.click()
    assert window.tabs.currentWidget() is window.evaluate
    evaluation = window.evaluate
    assert evaluation.output_edit.text() == str(out)
    assert evaluation.reference_edit.text() == str(tiny_m3)
    assert evaluation.evaluate_button.isEnabled() and evaluation.profile
    assert len(evaluation.plots.layer_plot.listDataItems()) == len(evaluation.profile)
    # Opening the output folder itself (a studio output) loads the same file.
    assert window.open_model(str(out))
    assert window.controller.errors is not None and len(window.controller.errors) == len(data)


def test_the_panel_says_what_a_run_repaired(qtbot, window, tmp_path):
    # A finished model beside the `.out.old` that a --force run killed before its cleanup leaves.
    out = tmp_path / "out"
    panel = window.convert
    panel.output.setText(str(out))
    with qtbot.waitSignal(panel.conversion_finished, timeout=WAIT_MS):
        assert panel.start()
    leftover = tmp_path / ".out.old"
    leftover.mkdir()
    (leftover / "config.json").write_text("{}")
    panel.force.setChecked(True)
    with qtbot.waitSignal(panel.conversion_finished, timeout=WAIT_MS):
        assert panel.start()
    assert not leftover.exists()
    shown = panel.message.text().replace("\u200b", "")  # the label breaks paths with zero-width spaces
    assert f"removed {leftover}" in shown


def test_the_outcome_and_next_steps_are_in_view_after_a_conversion(qtbot, tiny_m3, tmp_path):
    """Issue 18: at 1280x800 the Done text and Chat with it / Evaluate it / Publish... were below the
    fold of the Convert dock. Once the run ends they are inside its scroll area's viewport."""
    from PySide6.QtCore import QRect

    from test_gui_fixtures import open_window

    window = open_window(qtbot, tiny_m3, size=(1280, 800))
    panel = window.convert
    panel.quiet = True
    panel.output.setText(str(tmp_path / "out"))
    area = window.docks["convert"].widget()
    with qtbot.waitSignal(panel.conversion_finished, timeout=WAIT_MS):
        assert panel.start()

    def shown(widget) -> bool:
        viewport = area.viewport()
        top_left = widget.mapTo(viewport, widget.rect().topLeft())
        return viewport.rect().contains(QRect(top_left, widget.size()))

    for widget in (panel.chat_button, panel.evaluate_button, panel.publish_button):
        qtbot.waitUntil(lambda w=widget: shown(w))
    assert panel.message.text().startswith("Done: ") and shown(panel.message)
    window.shutdown()
