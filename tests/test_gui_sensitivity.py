"""The grid's "Sensitivity" heat map: the calibration pass on the worker, cancel, then fit by it."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from studio.views import item_roles
from studio.views.palette import error_colour, error_text
from test_gui_fixtures import open_window, studio_settings, tiny_m3  # noqa: F401

WAIT_MS = 120_000


@pytest.fixture
def window(qtbot, tiny_m3, tmp_path, monkeypatch):
    from studio.core.calibration import corpus

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the calibration cache stays in the test
    monkeypatch.setattr(corpus, "DEFAULT_SEQUENCES", 2)  # a short pass: 32 tokens
    monkeypatch.setattr(corpus, "DEFAULT_LENGTH", 16)
    w = open_window(qtbot, tiny_m3, "uniform-4bit")
    yield w
    w.shutdown()


def test_sensitivity_heat_map_cancel_measure_and_fit(qtbot, window, tmp_path):
    editor = window.editor
    row, grid = editor.errors, editor.grid_model
    runner = row.sensitivity_runner
    cell = grid.index_of("attn_q", 1)
    assert cell.data() == "4"

    # Cancel: the pass stops, the button comes back up, the grid shows bits again.
    with qtbot.waitSignal(runner.stopped, timeout=WAIT_MS) as stopped:
        qtbot.mouseClick(row.show_sensitivity, Qt.MouseButton.LeftButton)
        assert runner.worker is not None and row.survey_cancel.isVisibleTo(row)
        qtbot.mouseClick(row.survey_cancel, Qt.MouseButton.LeftButton)
    assert "cancel" in stopped.args[0].lower()
    assert not row.show_sensitivity.isChecked() and runner.stats is None and cell.data() == "4"

    # Measure: every quantized cell shows its sensitivity at its current bits, on the error colour scale.
    with qtbot.waitSignal(runner.finished, timeout=WAIT_MS) as done:
        qtbot.mouseClick(row.show_sensitivity, Qt.MouseButton.LeftButton)
    stats = done.args[0]
    assert row.show_sensitivity.isChecked() and not row.show_error.isChecked()
    measured = stats.relative_output_error()[("attn_q", 1)][4]
    assert cell.data(item_roles.ERROR) == pytest.approx(measured)
    assert cell.data() == error_text(measured, sign=False)
    assert cell.data(Qt.ItemDataRole.BackgroundRole) == error_colour(measured)
    assert f"relative output error at 4-bit g64: {error_text(measured)}" in cell.data(Qt.ItemDataRole.ToolTipRole)
    assert row.legend.isVisible() and row.legend.text().startswith("relative output error, %")
    assert "sensitivity" in row.status.text()
    painted = [grid.index(r, c).data(item_roles.ERROR) for r in range(grid.rowCount())
               for c in range(grid.columnCount()) if grid.has_units(r, c)]
    assert sum(e is not None for e in painted) > 20
    assert list((tmp_path / "cache").rglob("*.npz"))  # cached on disk
    path = tmp_path / "sensitivity.png"
    assert editor.grab().save(str(path))

    # "Show error" takes over the heat map; Sensitivity again is instant (no worker).
    qtbot.mouseClick(row.show_error, Qt.MouseButton.LeftButton)
    assert not row.show_sensitivity.isChecked() and grid.sensitivity is None
    qtbot.waitUntil(lambda: not editor.survey_runner.busy, timeout=WAIT_MS)
    qtbot.mouseClick(row.show_sensitivity, Qt.MouseButton.LeftButton)
    assert runner.worker is None and cell.data(item_roles.ERROR) == pytest.approx(measured)
    qtbot.mouseClick(row.show_sensitivity, Qt.MouseButton.LeftButton)
    assert cell.data() == "4" and not row.legend.isVisible()

    # Fit to budget proposes by the measured sensitivity, with no survey.
    c = window.controller
    before = c.project.estimate.total_bytes
    dialog = editor.open_fit_dialog()
    assert dialog.use_sensitivity.isEnabled() and dialog.use_sensitivity.isChecked()
    dialog.by_size.setChecked(True)
    dialog.size.setValue(before * 0.8 / dialog.unit_bytes)
    qtbot.mouseClick(dialog.propose_button, Qt.MouseButton.LeftButton)
    assert not editor.survey_runner.busy and dialog.result is not None, dialog.summary.text()
    assert dialog.result.proposal.total_bytes <= before * 0.8 and "output-space" in dialog.summary.text()
    assert " nats" in dialog.summary.text()  # sensitivities are KL in nats and add: not a percentage
    assert any("output-space sensitivity" in r.note for r in dialog.result.proposal.policy.rules)
    dialog.reject()
