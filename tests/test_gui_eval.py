"""The Evaluate tab and the chat's model label, driven as a person would."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from studio.core.evaluate.run import evaluate
from test_gui_fixtures import open_window, studio_settings  # noqa: F401


TEXT = ("The studio converts a model, then checks it against the model it came from. "
        "A good quant keeps the next-token distribution close to the reference's. ") * 12


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny bf16 llama in HF layout (with a tokenizer), its 3-bit MLX quant, and a text file."""
    from factory import make_tiny_model
    from mlx_lm import convert

    root = tmp_path_factory.mktemp("gui_eval")
    ref = make_tiny_model("llama", root / "ref")
    out = root / "q3"
    convert(str(ref), str(out), quantize=True, q_bits=3, q_group_size=32)
    text = root / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    return ref, out, text


def _panel(qtbot):
    from studio.views.eval_panel import EvalPanel

    panel = EvalPanel()
    qtbot.addWidget(panel)
    return panel


def test_panel_runs_an_evaluation_off_the_ui_thread(qtbot, folders, tmp_path):
    ref, out, text = folders
    panel = _panel(qtbot)
    with qtbot.waitSignal(panel.result_ready, timeout=30000) as blocker:
        assert panel.start(out, ref, text, context=64, max_tokens=256)
        assert not panel.start(out, ref, text)  # one at a time
    result = blocker.args[0]
    assert panel.result is result and not panel.running
    assert panel.values["kld_mean"].text().startswith(f"{result.kld_mean:.4f} ± ")
    assert panel.values["kld_percentiles"].text().count(" / ") == 3
    assert "dequantized once" in panel.values["compute"].text()
    assert result.verdict().label.capitalize() in panel.verdict_label.text()
    plots = panel.plots
    assert len(plots.kl_plot.items) > 0 and len(plots.ppl_plot.listDataItems()) == 2
    # The KL distribution: one histogram and a dashed line per reported percentile.
    assert len(plots.kl_hist.listDataItems()) == 1
    assert sum(type(i).__name__ == "InfiniteLine" for i in plots.kl_hist.items) == 4
    panel.resize(1000, 760)
    assert panel.grab().save(str(tmp_path / "eval_panel.png"))
    panel.shutdown()


def test_panel_cancel_and_failure(qtbot, folders, tmp_path):
    ref, out, text = folders
    panel = _panel(qtbot)
    with qtbot.waitSignal(panel.failed, timeout=10000) as blocker:
        panel.start(tmp_path / "missing", ref, text)
    assert "does not exist" in blocker.args[0] and "does not exist" in panel.status.text()
    panel.start(out, ref, text, context=8)
    qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not panel.running and panel._worker is None, timeout=20000)
    assert "cancelled" in panel.status.text() and panel.result is None
    panel.shutdown()


def test_the_verdict_names_the_figure_that_drove_it(qtbot, folders):
    ref, _, _ = folders
    r = evaluate(ref, ref, max_tokens=130, context=64)
    r.ppl, r.ppl_reference, r.kld_mean, r.top1_agreement = 66.26, 66.0, 0.027, 0.879
    r.reference_confidence = 0.6  # the demo reference is sure enough for top-1 to count
    panel = _panel(qtbot)
    panel.show_result(r)
    assert ">Good<" in panel.verdict_label.text() and "Noticeably" not in panel.verdict_label.text()
    findings = panel.findings_label.text()
    top1 = findings[findings.index("<b>top-1 agreement</b>"):]
    assert "drove the verdict" in top1 and "drove the verdict" not in findings[:findings.index("<b>top-1")]


def test_tiny_kl_is_written_with_significant_digits(qtbot, folders):
    ref, _, _ = folders
    r = evaluate(ref, ref, max_tokens=130, context=64)
    r.kld_mean, r.kld_median, r.kld_p99, r.kld_max = 2.34e-5, 2.2e-5, 4.7e-5, 6.2e-5
    panel = _panel(qtbot)
    panel.show_result(r)
    assert panel.values["kld_mean"].text() == "2.34e-05"
    assert panel.values["kld_median"].text() == "2.20e-05" and panel.values["kld_max"].text() == "6.20e-05"
    assert "2.34e-05 nats mean" in panel.findings_label.text()


def test_the_evaluate_tab_forgets_the_previous_model(qtbot, folders, tiny_model, tmp_path):
    """Issue 11 item 6: after another model is opened (or converted), the old verdict, figures, plots
    and "Recorded in ..." line must not stay on screen."""
    from studio.core.convert import convert
    from studio.core.project import Project

    ref, _, text = folders
    first = tmp_path / "first-q4"
    convert(Project.open(ref, "uniform-4bit"), first, measure_errors=True)
    window = open_window(qtbot, str(ref))
    try:
        window.tabs.setCurrentWidget(window.evaluate)
        panel = window.evaluate
        panel.set_paths(first, ref, text)
        panel.context.setValue(64)
        panel.max_tokens.setValue(128)
        with qtbot.waitSignal(panel.result_ready, timeout=30000):
            qtbot.mouseClick(panel.evaluate_button, Qt.MouseButton.LeftButton)
        assert "Recorded in the model card" in panel.card_label.text() and panel.plots.kl_hist.listDataItems()
        assert panel.values["ppl"].text() != "–" and panel.profile

        # Another model is opened: nothing of the first one's evaluation stays.
        assert window.open_model(str(tiny_model("qwen3_moe")))
        assert panel.result is None and panel.verdict_label.text() == "" and panel.card_label.text() == ""
        assert all(label.text() == "–" for label in panel.values.values())
        assert not panel.plots.kl_hist.listDataItems() and not panel.plots.kl_plot.items
        assert not panel.plots.layer_plot.listDataItems() and panel.output_edit.text() == ""

        # A result shown, then a different output arrives from a conversion: the old result goes too.
        with qtbot.waitSignal(panel.result_ready, timeout=30000):
            panel.start(first, ref, text, context=64, max_tokens=128)
        panel.set_paths(tmp_path / "second", ref)
        assert panel.result is None and panel.card_label.text() == "" and "Ready to compare second" in panel.status.text()
    finally:
        window.shutdown()


def test_chat_labels_a_mixed_output_by_its_real_mix(qtbot, tiny_model, tmp_path):
    """Issue 11 item 9: a mixed 3/6-bit output was labelled "6-bit" from the config's top-level entry."""
    from studio.chat import ChatPane
    from studio.core.convert import convert
    from studio.core.project import Project

    project = Project.open(tiny_model("llama"), "mixed-3-6")
    out = tmp_path / "mixed"
    convert(project, out)
    pane = ChatPane()
    qtbot.addWidget(pane)
    with qtbot.waitSignal(pane.model_loaded, timeout=60000) as blocker:
        pane.open_model(out)
    label = blocker.args[1]
    assert f"{project.policy.name}: 3/6-bit, {project.estimate.bpw_quantized:.2f} bpw" in label
    assert "dequantized to float32" in label or "quantized kernels" in label
    assert "3/6-bit" in pane._sides[0].label.text()
    pane.shutdown()


def test_panel_fields_per_layer_plot_and_model_card_line(qtbot, folders, tmp_path, monkeypatch):
    """A studio conversion of the reference: the fields run it, the per-layer plot shows its
    quant_errors.json in the role colours, and the panel says the model card was updated."""
    from PySide6.QtWidgets import QFileDialog

    from studio.core.convert import convert
    from studio.core.project import Project
    from studio.core.quant_error.error_map import layer_profile, load
    from studio.core.model.roles import FAMILY_COLOURS

    ref, mlx_out, text = folders
    out = tmp_path / "studio-q4"
    convert(Project.open(ref, "uniform-4bit"), out, measure_errors=True)
    panel = _panel(qtbot)
    assert not panel.plots.layer_plot.listDataItems()  # nothing to show yet: a hint instead
    assert not panel.start_from_fields() and "Choose" in panel.status.text()

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(out))
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(text), ""))
    buttons = [b for b in panel.findChildren(type(panel.evaluate_button)) if b.text() == "Choose…"]
    assert len(buttons) == 3
    buttons[0].click()
    buttons[2].click()
    assert panel.output_edit.text() == str(out) and panel.text_edit.text() == str(text)
    panel.reference_edit.setText(str(ref))

    profile = layer_profile(load(out))
    assert set(profile) == {"attention", "dense_mlp"} and panel.profile == profile
    items = panel.plots.layer_plot.listDataItems()
    assert len(items) == 2
    for item, family in zip(items, profile):
        x, y = item.getData()
        assert list(x) == sorted(profile[family]) and item.opts["pen"].color().name().upper() == FAMILY_COLOURS[family]
        assert all(1 < 10 ** v < 20 for v in y)  # log10 of percent: 4-bit on these weights is a few percent

    panel.context.setValue(64)
    panel.max_tokens.setValue(256)
    with qtbot.waitSignal(panel.result_ready, timeout=30000):
        panel.evaluate_button.click()
        assert not panel.evaluate_button.isEnabled()
    assert panel.evaluate_button.isEnabled()
    assert "Recorded in the model card" in panel.card_label.text() and "README.md" in panel.card_label.text()
    assert "Evaluated by Config-I Studio" in (out / "README.md").read_text()
    assert len(panel.plots.layer_plot.listDataItems()) == 2  # still there beside the KL plot

    # An output the studio did not make: nothing recorded, and the line says why.
    with qtbot.waitSignal(panel.result_ready, timeout=30000):
        panel.start(mlx_out, ref, text, context=64, max_tokens=128)
    assert "not converted by the studio" in panel.card_label.text()
    assert not panel.profile and not panel.plots.layer_plot.listDataItems()
    panel.shutdown()


@pytest.mark.parametrize("size", [(1280, 800), (1024, 700)])
def test_the_evaluate_tab_fits_small_windows(qtbot, folders, size):
    """Issue 18, at 1280x800 and 1024x700: figures wrapped beside the verdict, the per-layer legend
    and the right-hand plots were cut off, the y axes had no room for ticks, the percentile labels
    overlapped. Every plot, title and legend entry lies inside the plots' view; each figure is one
    line; the percentile labels do not overlap; each plot has room for its tick labels."""
    from PySide6.QtCore import QRectF

    from studio.core.model.roles import FAMILY_LABELS

    ref, out, text = folders
    window = open_window(qtbot, ref, size=size)
    window.tabs.setCurrentWidget(window.evaluate)
    panel = window.evaluate
    with qtbot.waitSignal(panel.result_ready, timeout=30000):
        panel.start(out, ref, text, context=64, max_tokens=256)
    families = list(FAMILY_LABELS)[:7]  # an MoE model's families: two lines of legend
    panel.plots.show_profile({f: {0: 0.01 * (i + 1), 1: 0.02 * (i + 1)} for i, f in enumerate(families)})
    plots = panel.plots
    qtbot.wait(50)
    # Too short a window scrolls the results; it never squeezes the plots below their least.
    assert plots.height() >= plots.minimumHeight() and panel.report.height() >= panel.report.minimumHeight()
    assert window.width() <= size[0] and window.height() <= size[1]
    assert panel.layout().minimumSize().height() <= panel.height()  # what does not fit scrolls, never overflows
    view = QRectF(plots.viewport().rect()).adjusted(-1, -1, 1, 1)
    parts = [plots.kl_plot, plots.ppl_plot, plots.kl_hist, plots.layer_plot, plots.layer_legend]
    parts += [plot.titleLabel for plot in parts[:4]]
    for part in parts:
        shown = plots.mapFromScene(part.sceneBoundingRect()).boundingRect()
        assert view.contains(QRectF(shown)), (type(part).__name__, shown, view)
    for plot in parts[:4]:
        assert plot.getViewBox().height() >= 60  # room for at least three tick labels
    line = panel.values["ppl"].fontMetrics().lineSpacing()
    for key, label in panel.values.items():  # numbers on one line (the compute path is a sentence)
        assert key == "compute" or label.height() < 2 * line, (key, label.text())
    labels = [item.label.sceneBoundingRect() for item in plots.kl_hist.items if type(item).__name__ == "InfiniteLine"]
    assert len(labels) == 4
    assert not any(a.intersects(b) for i, a in enumerate(labels) for b in labels[i + 1:]), labels
    window.grab().save(f"/tmp/evaluate_tab_{size[0]}x{size[1]}.png")
    window.shutdown()
