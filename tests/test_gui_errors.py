"""Measured error in the window: the grid's heat map, the tree's Error column, loading quant_errors.json, fit."""

from __future__ import annotations

import json
import math

import pytest
from PySide6.QtCore import Qt

from studio.core.convert import convert
from studio.core.project import Project
from studio.core.quant_error.error_map import FILE_NAME
from studio.views import item_roles
from studio.views.palette import error_text
from studio.views.tensor_model import ERROR
from test_gui_fixtures import open_window, studio_settings, tiny_m3  # noqa: F401



@pytest.fixture
def window(qtbot, tiny_m3):
    w = open_window(qtbot, tiny_m3, "uniform-4bit")
    yield w
    w.shutdown()


def _surveyed(qtbot, window):
    editor = window.editor
    with qtbot.waitSignal(editor.survey_runner.finished, timeout=60000) as blocker:
        editor.set_show_error(True)  # nothing measured yet: the toggle starts a survey
    return blocker.args[0]


def test_show_error_colours_cells_by_the_surveyed_error(qtbot, window, tmp_path):
    editor, c = window.editor, window.controller
    grid = editor.grid_model
    cell = grid.index_of("attn_q", 1)
    assert cell.data() == "4"
    survey = _surveyed(qtbot, window)
    assert c.survey is survey and c.errors is not None and editor.errors.show_error.isChecked()
    expected = math.sqrt(survey[("attn_q", 1)][4])
    assert cell.data(item_roles.ERROR) == pytest.approx(expected, rel=1e-9)
    assert cell.data() == error_text(expected, sign=False)  # the legend says "%"
    assert "relative error at 4-bit" in cell.data(Qt.ItemDataRole.ToolTipRole)
    kept = grid.index_of("router_bias", 1)  # kept in f32: no error, its label on a neutral background
    assert kept.data() == "f32" and kept.data(item_roles.ERROR) is None
    assert grid.index_of("router", 1).data(item_roles.ERROR) < expected / 4  # 8-bit router vs 4-bit attention
    # Every quantized cell has a figure.
    texts = [grid.index(r, col).data() for r in range(grid.rowCount()) for col in range(grid.columnCount())
             if grid.has_units(r, col)]
    assert "–" not in texts and sum(t[0].isdigit() and "e" not in t for t in texts) > 20
    path = tmp_path / "editor.png"
    assert editor.grab().save(str(path))
    editor.set_show_error(False)
    assert cell.data() == "4" and not editor.errors.legend.isVisible()


def test_tree_error_column_follows_the_decision(qtbot, window, qtmodeltester):
    survey = _surveyed(qtbot, window)
    model, c = window.tree.model, window.controller
    unit = next(i for i, d in enumerate(c.project.plan.decisions) if d.action == "quantize"
                and c.project.units[i].layer == 1 and c.project.units[i].role == "attn_q")
    index = model.unit_index(unit).siblingAtColumn(ERROR)
    path = c.project.units[unit].path
    assert index.data() == error_text(survey.units[path].errors[4])
    assert index.data(item_roles.ERROR) == survey.units[path].errors[4]
    kept = next(i for i, u in enumerate(c.project.units) if u.role == "router_bias")
    assert model.unit_index(kept).siblingAtColumn(ERROR).data() == ""
    window.editor.set_brush("2")
    window.editor._stroke_finished({("attn_q", 1): window.editor.grid.brush}, (2, 0, 2, 0))
    c.flush()
    assert index.data(item_roles.ERROR) == survey.units[path].errors[2] > survey.units[path].errors[4]
    assert model.headerData(ERROR, Qt.Orientation.Horizontal) == "Error"
    qtmodeltester.check(model)


def test_loaded_quant_errors_json_shows_the_conversion_figures(qtbot, window, tmp_path, tiny_m3):
    out = tmp_path / "mlx"
    convert(Project.open(tiny_m3, "uniform-4bit"), out)
    data = json.loads((out / FILE_NAME).read_text())
    editor = window.editor
    assert editor.load_errors(str(out))
    editor.set_show_error(True)
    assert not editor.survey_runner.busy  # errors are loaded: no survey
    grid = editor.grid_model
    path = next(p for p, e in data.items() if e["role"] == "attn_v" and e["layer"] == 1)
    assert grid.index_of("attn_v", 1).data(item_roles.ERROR) == pytest.approx(data[path]["relative_error"])
    assert FILE_NAME in grid.index_of("attn_v", 1).data(Qt.ItemDataRole.ToolTipRole)
    editor.set_brush("2")
    editor._stroke_finished({("attn_v", 1): editor.grid.brush}, (2, 0, 2, 0))
    window.controller.flush()
    assert grid.index_of("attn_v", 1).data() == "–"  # converted at 4 bits; 2 bits was never measured


def test_fit_dialog_accept_changes_the_estimate_and_undo_restores_it(qtbot, window):
    editor, c = window.editor, window.controller
    before = c.project.estimate.total_bytes
    dialog = editor.open_fit_dialog()
    dialog.by_size.setChecked(True)
    target = before * 0.8
    dialog.size.setValue(target / dialog.unit_bytes)
    with qtbot.waitSignal(editor.survey_runner.finished, timeout=60000):
        dialog.propose()
    assert dialog.result is not None and dialog.accept_button.isEnabled()
    assert dialog.changes.rowCount() > 0 and "→" in dialog.changes.index(0, 2).data()
    # Issue 18: clear verbs (not "Accept"/"Reject"), and a table that fills the dialog's width.
    assert sorted(b.text().replace("&", "") for b in dialog.buttons.buttons()) == ["Apply", "Cancel"]
    table = dialog.table
    qtbot.waitUntil(lambda: table.horizontalHeader().length() == table.viewport().width())
    assert dialog.result.proposal.total_bytes <= target
    dialog.accept()
    c.flush()
    after = c.project.estimate.total_bytes
    assert after == dialog.result.proposal.total_bytes and after < before
    assert c.undo_stack.count() == 1 and c.undo_stack.text(0) == "fit to budget"
    c.undo_stack.undo()
    c.flush()
    assert c.project.estimate.total_bytes == before
    # A second proposal reuses the survey (it covers the policy): no worker.
    dialog = editor.open_fit_dialog()
    dialog.by_mac.setChecked(True)
    dialog.propose()
    assert not editor.survey_runner.busy and dialog.result is not None
    dialog.reject()
    assert c.project.estimate.total_bytes == before


def test_error_scale_reads_right_for_real_quantization():
    from studio.views.palette import ERROR_SCALE_TIP, error_colour, error_legend_html

    eight, four, two = error_colour(0.005), error_colour(0.07), error_colour(0.40)  # typical 8, 4, 2 bits
    assert eight.lightnessF() > 0.8 and eight.red() > 240 and eight.green() > 230  # pale yellow: calm
    assert 0.55 < four.lightnessF() < 0.75 and four.red() > four.green() > four.blue()  # orange
    assert two.lightnessF() < 0.4 and two.red() > 3 * two.green()  # dark red: alarming
    sweep = [error_colour(e / 1000).lightnessF() for e in range(1, 600, 3)]
    assert all(a >= b - 1e-9 for a, b in zip(sweep, sweep[1:]))  # sequential: darker with more error
    assert error_colour(None).name() == "#d9d9d9"
    legend = error_legend_html()
    assert "%:" in legend and "0.50" in legend and "40" in legend
    assert "8-bit about 0.5%" in ERROR_SCALE_TIP and "2-bit 30-50%" in ERROR_SCALE_TIP


def test_heat_map_colours_an_8_bit_cell_calm_and_a_2_bit_cell_alarming(qtbot, window):
    editor, c = window.editor, window.controller
    _surveyed(qtbot, window)
    editor.set_brush("8")
    editor._stroke_finished({("attn_q", 1): editor.grid.brush}, (2, 0, 2, 0))
    editor.set_brush("2")
    editor._stroke_finished({("attn_k", 1): editor.grid.brush}, (2, 1, 2, 1))
    c.flush()
    grid = editor.grid_model
    calm, alarming = grid.index_of("attn_q", 1), grid.index_of("attn_k", 1)
    assert calm.data(item_roles.ACTION).bits == 8 and alarming.data(item_roles.ACTION).bits == 2
    assert calm.data(item_roles.ERROR) < 0.02 < 0.2 < alarming.data(item_roles.ERROR)
    pale, dark = calm.data(Qt.ItemDataRole.BackgroundRole), alarming.data(Qt.ItemDataRole.BackgroundRole)
    assert pale.lightnessF() > 0.75 and dark.lightnessF() < 0.5 and dark.red() > 2 * dark.green()
    assert calm.data(Qt.ItemDataRole.ForegroundRole).name() == "#000000"
    assert alarming.data(Qt.ItemDataRole.ForegroundRole).name() == "#ffffff"
    assert "typical for 2-bit" in alarming.data(Qt.ItemDataRole.ToolTipRole)
    kept = grid.index_of("norm", 1)  # not quantized: a faint shade, the theme's own text colour
    assert kept.data(Qt.ItemDataRole.BackgroundRole).alpha() < 128
    assert kept.data(Qt.ItemDataRole.ForegroundRole) is None
    assert editor.errors.legend.isVisible() and "8-bit" in editor.errors.legend.toolTip()


def test_the_survey_status_is_cut_not_clipped(qtbot, window):
    editor = window.editor
    status = editor.errors.status
    before = editor.minimumSizeHint().width()
    status.setText("surveyed 1,699 tensors (41.0 s) " + "and a very long tail of words " * 10)
    assert editor.minimumSizeHint().width() == before  # a long status never widens the editor
    assert status.toolTip() == status.text()
    window.resize(900, 700)
    qtbot.wait(10)
    row = status.parentWidget()
    assert status.geometry().right() <= row.width()  # inside its row, whatever the width


def test_fit_dialog_refuses_an_unreachable_target_before_surveying(qtbot, window):
    editor = window.editor
    dialog = editor.open_fit_dialog()
    dialog.by_size.setChecked(True)
    dialog.size.setValue(dialog.size.minimum())  # 10 KB: below every cell at 2-bit
    with qtbot.assertNotEmitted(editor.survey_runner.started):
        dialog.propose()
    assert not editor.survey_runner.busy and dialog.result is None
    assert "below the smallest this policy can reach" in dialog.summary.text()
    dialog.reject()


def test_fit_dialog_measures_again_a_survey_of_another_model(qtbot, window, tiny_model):
    """A survey of a model with the same tensor names (another seed) covers the plan, which was all the
    dialog checked; it is of another model, so the dialog surveys the open one instead of using it."""
    from studio.core.quant_error.survey import survey

    editor, c = window.editor, window.controller
    twin = survey(Project.open(tiny_model("minimax_m3_vl", seed=1), "uniform-4bit"), max_elements_per_unit=4096)
    c.set_errors(twin.error_map(), twin)
    dialog = editor.open_fit_dialog()
    dialog.by_size.setChecked(True)
    dialog.size.setValue(c.project.estimate.total_bytes * 0.8 / dialog.unit_bytes)
    with qtbot.waitSignal(editor.survey_runner.finished, timeout=60000):
        dialog.propose()
    assert c.survey is not twin and c.survey.mismatch(c.project) is None
    assert dialog.result is not None and dialog.result.proposal.total_bytes <= c.project.estimate.total_bytes
    dialog.reject()
