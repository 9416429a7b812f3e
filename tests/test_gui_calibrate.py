"""The convert panel's Calibrate switch: a calibrated conversion through the worker."""

from __future__ import annotations

import pytest

from test_gui_fixtures import studio_settings, tiny_m3  # noqa: F401

WAIT_MS = 240_000


@pytest.fixture
def window(qtbot, tiny_m3, tmp_path, monkeypatch):
    from studio.views.main_window import MainWindow

    from studio.core.calibration import corpus

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the calibration cache stays in the test
    monkeypatch.setattr(corpus, "DEFAULT_SEQUENCES", 2)  # a short pass: 64 tokens
    monkeypatch.setattr(corpus, "DEFAULT_LENGTH", 32)
    w = MainWindow()
    qtbot.addWidget(w)
    assert w.open_model(str(tiny_m3))
    w.convert.quiet = True
    yield w
    w.shutdown()


def test_the_calibrate_switch_calibrates_then_converts(qtbot, window, tmp_path):
    panel = window.convert
    out = tmp_path / "out"
    panel.output.setText(str(out))
    panel.calibrate.setChecked(True)
    phases, texts, bars = [], [], []

    def seen(p):
        phases.append(p.phase)
        texts.append(panel.status.text())
        bars.append(panel.bar.value())

    with qtbot.waitSignal(panel.conversion_finished, timeout=WAIT_MS):
        assert panel.start()
        panel.worker.progress.connect(seen)
    assert "calibrating" in phases and "writing" in phases
    # Issue 18: the step is named, and the bar and the ETA run over both steps.
    assert any(t.startswith("Step 1 of 2, calibrating: ") and t.endswith("left in all") for t in texts)
    assert any(t.startswith("Step 2 of 2, writing ") and t.endswith("left in all") for t in texts)
    first_writing = bars[phases.index("writing")]
    assert 0 < first_writing < 1000 and max(bars[:phases.index("writing")]) <= first_writing
    assert "## Calibration" in (out / "README.md").read_text()
    assert list((tmp_path / "cache").rglob("*.npz"))  # cached for the next conversion


def test_the_method_beside_calibrate_runs_the_learned_method(qtbot, window, tmp_path, monkeypatch):
    from studio import settings
    from studio.core.calibration import learned
    from studio.core.calibration.learned_layer import LearnSettings

    monkeypatch.setattr(learned, "DEFAULT_SETTINGS", LearnSettings(steps=4, batch=1, holdout=0))
    panel = window.convert
    panel.calibrate.setChecked(False)
    assert not panel.calibrate_method.isEnabled()  # a method only means something when calibrating
    panel.calibrate.setChecked(True)
    assert panel.calibrate_method.isEnabled()
    assert [panel.calibrate_method.itemData(i) for i in range(panel.calibrate_method.count())] == ["gptq", "learned"]
    panel.calibrate_method.setCurrentIndex(panel.calibrate_method.findData("learned"))
    assert settings.get(settings.CALIBRATE_METHOD) == "learned"
    out = tmp_path / "out"
    panel.output.setText(str(out))
    labels = []
    with qtbot.waitSignal(panel.conversion_finished, timeout=WAIT_MS) as finished:
        assert panel.start()
        panel.worker.progress.connect(lambda p: labels.append(p.unit))
    assert finished.args[0].calibration == "learned"
    assert any("step" in label for label in labels)  # the training steps show as calibration progress
    assert "Method: learned" in (out / "README.md").read_text()
