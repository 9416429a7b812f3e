"""How long a calibrated conversion takes: the estimate before, the progress and ETA during.

Issue 18: the window said "about 2m 27s" for a calibrated conversion that took 28.5 minutes,
25.5 of them calibrating; the progress named no step and its ETA ignored the pass.
"""

from __future__ import annotations

import io
import re

import pytest

from studio.core.calibration import corpus
from studio.core.calibration.timing import (TYPICAL_CALIBRATION_RATE, ConversionTime, PhasedProgress,
                                            calibration_work, conversion_time)
from studio.core.project import Project


@pytest.fixture
def small_pass(monkeypatch, tmp_path):
    """A short calibration pass (64 tokens) with its cache in the test's folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(corpus, "DEFAULT_SEQUENCES", 2)
    monkeypatch.setattr(corpus, "DEFAULT_LENGTH", 32)


def test_the_estimate_counts_the_calibration_pass_and_moe_experts_by_top_k(tiny_model, small_pass):
    project = Project.open(tiny_model("qwen3_moe"), "config-i")
    plain = conversion_time(project, calibrate=False)
    calibrated = conversion_time(project, calibrate=True)
    assert plain.calibrating_s == 0 and plain.steps == 1
    assert calibrated.converting_s == plain.converting_s and calibrated.steps == 2
    assert calibrated.calibrating_s == pytest.approx(calibration_work(project) / TYPICAL_CALIBRATION_RATE)
    assert "typical CPU rate" in calibrated.calibrating_how
    # Work grows linearly with the tokens; an MoE layer's experts count as the top-k a token visits.
    per_token = (calibration_work(project, 64) - calibration_work(project, 0)) / 64
    assert calibration_work(project, 128) - calibration_work(project, 64) == pytest.approx(64 * per_token)
    config = project.inventory.text_config
    assert config["num_experts_per_tok"] < config["num_experts"]
    weights = sum(u.elements for u in project.units if u.layer is not None and u.kind == "module")
    experts = sum(u.elements for u in project.units if u.layer is not None and u.experts > 1)
    assert per_token == pytest.approx(weights - experts + experts * config["num_experts_per_tok"]
                                      / config["num_experts"])


def test_the_window_asks_with_both_steps(tiny_model, small_pass, monkeypatch):
    """The demo-sized pass is over a minute at the typical rate: Calibrate on, the question comes,
    names both steps, and the total is their sum."""
    from studio.views import convert_confirm

    project = Project.open(tiny_model("qwen3_moe"), "config-i")
    monkeypatch.setattr("studio.core.calibration.timing.TYPICAL_CALIBRATION_RATE", 1e3)  # a slow machine
    monkeypatch.setattr(convert_confirm.settings, "get", lambda key: key.default)
    assert convert_confirm.question(project, "/tmp/out", calibrate=False) is None  # a second to convert
    text = convert_confirm.question(project, "/tmp/out", calibrate=True)
    time = convert_confirm.expected(project, calibrate=True)
    assert text and f"about {convert_confirm.duration(time.total_s)}: calibrating about " in text
    assert "then converting about" in text


def test_a_calibrated_conversion_reports_both_steps_and_is_cached_next_time(tiny_model, small_pass, tmp_path):
    from studio.core.calibration.methods import calibrate_and_convert

    project = Project.open(tiny_model("qwen3_moe"), "uniform-4bit")
    seen = []
    calibrate_and_convert(project, tmp_path / "out", progress=seen.append)
    steps = [p.stage for p in seen]
    assert steps[0] == "step 1 of 2: calibrating" and steps[-1].startswith("step 2 of 2: ")
    assert steps.index(steps[-1]) > 0 and all(s.startswith("step ") for s in steps)
    fractions = [p.overall_fraction for p in seen]
    assert fractions[0] < 0.5 and fractions[-1] == pytest.approx(1.0, abs=0.02)
    calibrating = [p for p in seen if p.phase == "calibrating"]
    # During the pass, the ETA over both steps includes the conversion still to come.
    assert all(p.overall_eta_s >= p.eta_s for p in calibrating)
    # The next estimate knows: this pass is cached, and this machine's rate is remembered.
    again = conversion_time(project, calibrate=True)
    assert again.calibrating_s == 0 and "cached" in again.calibrating_how
    other = Project.open(tiny_model("qwen3_moe", seed=1), "uniform-4bit")
    assert "this machine's last calibration pass" in conversion_time(other, calibrate=True).calibrating_how


def test_phased_progress_over_both_steps():
    from studio.core.calibration.calibrate import CalibrationProgress
    from studio.core.convert import Progress

    seen = []
    phased = PhasedProgress(seen.append, ConversionTime(100.0, 50.0, "typical", "typical"))
    phased.calibrating(CalibrationProgress(0, 10, "embedding", None))
    first = seen[-1]
    assert first.stage == "step 1 of 2: calibrating" and first.total_eta_s == pytest.approx(150, abs=1)
    phased.calibrating(CalibrationProgress(5, 10, "layer 4", 80.0))
    assert seen[-1].total_eta_s == pytest.approx(80 + 50, abs=1) and seen[-1].eta_s == pytest.approx(80, abs=1)
    phased.converting(Progress("layers.0.mlp", 1, 4, 10, 40, 1e6, 30.0, "writing"))
    last = seen[-1]
    assert last.stage == "step 2 of 2: writing" and last.total_eta_s == 30.0 and last.unit == "layers.0.mlp"


def test_the_command_line_shows_both_steps(tiny_model, small_pass, tmp_path, capsys):
    from studio.main import main

    assert main(["convert", str(tiny_model("qwen3_moe")), str(tmp_path / "out"), "--calibrate"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"expected: about \S+ in all: calibrating about \S+ at a typical CPU rate", err)
    assert re.search(r"step 1 of 2: calibrating\s+\d+\.\d%  ETA ", err)
    assert re.search(r"step 2 of 2: writing\s+\d+\.\d%\s+\d+\.\d MB/s  ETA ", err)
