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
    phases = []
    with qtbot.waitSignal(panel.conversion_finished, timeout=WAIT_MS):
        assert panel.start()
        panel.worker.progress.connect(lambda p: phases.append(p.phase))
    assert "calibrating" in phases and "writing" in phases
    assert "## Calibration" in (out / "README.md").read_text()
    assert list((tmp_path / "cache").rglob("*.npz"))  # cached for the next conversion
