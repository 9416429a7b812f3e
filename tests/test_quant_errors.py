"""Per-tensor error: the converter's quant_errors.json, the survey without converting, and `fit`."""

from __future__ import annotations

import json
import math

import mlx.core as mx
import pytest

from studio.core.quant_error import error_map as quant_errors
from studio.core.budget.propose import quantized_cells
from studio.core.convert import ERROR_ROW_STRIDE, CancelToken, ConversionCancelled, convert
from studio.core.model.dequantize import SourceReader
from studio.core.quant_error.survey import SurveyCancelled, sample_spans, survey
from studio.core.budget.report import layers_text, target_bytes
from studio.core.memory import weights_budget_bytes
from studio.core.policy.bit_policy import Layers, Quantize, Rule, policy_from_dict
from studio.core.project import Project
from studio.core.quant_error.round_trip import relative_error
from studio.core.model.unit_source import read_unit_rows, unit_values, whole_only
from studio.main import main

SMALL_SHARDS = 200_000


def _float_weights(project, index):
    """The unit's whole float weights as the converter reads them."""
    unit = project.units[index]
    rows = unit.shape[0] if len(unit.shape) >= 2 else 1
    reader = SourceReader(project.inventory.root)
    try:
        values = unit_values(unit, read_unit_rows(reader, project.inventory, unit, 0, rows))
        mx.eval(values)
        return values
    finally:
        reader.close()


@pytest.mark.parametrize("arch,source_format", [("minimax_m3_vl", "mxfp8"), ("deepseek_v3", "fp8"),
                                                ("gpt_oss", "bf16"), ("llama", "bf16")])
def test_quant_errors_json_equals_tensor_error_of_the_float_weights(tiny_model, tmp_path, arch, source_format):
    project = Project.open(tiny_model(arch, source_format), "config-i")
    out = tmp_path / "out"
    convert(project, out, max_shard_bytes=SMALL_SHARDS)
    data = json.loads((out / quant_errors.FILE_NAME).read_text())
    quantized = [i for i, d in enumerate(project.plan.decisions) if d.action == "quantize"]
    assert set(data) == {project.units[i].path for i in quantized}
    dtype = {"BF16": mx.bfloat16, "F16": mx.float16}[project.plan.float_dtype]
    for i in quantized:
        unit, decision = project.units[i], project.plan.decisions[i]
        entry = data[unit.path]
        assert (entry["role"], entry["layer"], entry["bits"], entry["group_size"], entry["mode"], entry["elements"]) \
            == (unit.role, unit.layer, decision.bits, decision.group_size, decision.mode, unit.elements)
        weights = _float_weights(project, i)
        # The converter measures every ERROR_ROW_STRIDE-th row of each matrix, exactly.
        sampled = relative_error(weights[..., ::ERROR_ROW_STRIDE, :], decision.bits, decision.group_size,
                                 decision.mode, dtype=dtype)
        assert sampled > 0
        assert entry["relative_error"] == pytest.approx(sampled, rel=1e-4), unit.path
        # ...which estimates the whole tensor's figure closely.
        full = relative_error(weights, decision.bits, decision.group_size, decision.mode, dtype=dtype)
        assert entry["relative_error"] == pytest.approx(full, rel=0.2), unit.path


def test_chunked_and_resumed_conversions_write_the_same_errors(tiny_model, tmp_path, monkeypatch):
    from studio.core.convert import chunks

    project = Project.open(tiny_model("minimax_m3_vl"), "config-i")
    convert(project, tmp_path / "whole", max_shard_bytes=SMALL_SHARDS)
    whole = json.loads((tmp_path / "whole" / quant_errors.FILE_NAME).read_text())
    monkeypatch.setattr(chunks, "CHUNK_ELEMENTS", 3000)
    token = CancelToken()

    def cancel_midway(p):
        if p.units_done >= 40:
            token.cancel()

    with pytest.raises(ConversionCancelled):
        convert(project, tmp_path / "again", progress=cancel_midway, cancel=token, max_shard_bytes=SMALL_SHARDS)
    assert convert(project, tmp_path / "again", max_shard_bytes=SMALL_SHARDS).resumed_shards > 0
    again = json.loads((tmp_path / "again" / quant_errors.FILE_NAME).read_text())
    assert set(again) == set(whole)
    for path, entry in whole.items():
        assert again[path]["relative_error"] == pytest.approx(entry["relative_error"], rel=1e-5)


def test_errors_can_be_turned_off(tiny_model, tmp_path):
    out = tmp_path / "o"
    assert main(["convert", str(tiny_model("llama")), str(out), "--policy", "uniform-4bit", "--no-errors"]) == 0
    assert (out / "config.json").exists() and not (out / quant_errors.FILE_NAME).exists()


def test_survey_covers_every_quantized_cell_and_error_falls_with_bits(tiny_model):
    project = Project.open(tiny_model("minimax_m3_vl", "mxfp8"), "config-i")
    result = survey(project)
    assert set(result) == set(quantized_cells(project))
    for cell, errors in result.items():
        assert sorted(errors) == [2, 3, 4, 5, 6, 8]
        values = [errors[b] for b in (2, 3, 4, 5, 6, 8)]
        assert all(a > b for a, b in zip(values, values[1:])), cell
        assert 0.05 < math.sqrt(errors[2]) < 0.6 and 1e-4 < math.sqrt(errors[8]) < 0.02
    # A whole-tensor survey of a unit agrees with round_trip.relative_error on the same weights.
    index = next(i for i, u in enumerate(project.units) if u.transform == "stack")
    unit, decision = project.units[index], project.plan.decisions[index]
    assert result.units[unit.path].sampled == unit.elements
    expected = relative_error(_float_weights(project, index), 3, decision.group_size, dtype=mx.bfloat16)
    assert result.units[unit.path].errors[3] == pytest.approx(expected, rel=1e-4)
    # It covers the plan it surveyed, and no longer one that changes a group size.
    assert result.covers(project.plan)
    regrouped = project.policy.with_rules([*project.policy.rules, Rule(("attention",), Layers("all"), Quantize(4, 32))])
    assert not result.covers(Project(project.inventory, regrouped).plan)


def test_survey_samples_are_bounded_and_still_close(tiny_model):
    project = Project.open(tiny_model("deepseek_v3", "fp8"), "uniform-4bit")
    full = survey(project, bits_options=(4,))
    small = survey(project, bits_options=(4,), max_elements_per_unit=4096)
    by_path = {u.path: u for u in project.units}
    sampled_less = 0
    for path, u in small.units.items():
        unit = by_path[path]
        if whole_only(unit):
            assert u.sampled == unit.elements
        else:  # at most the budget, or one row of each of the few row blocks or experts
            assert u.sampled <= max(4096, 4 * unit.shape[-1])
            sampled_less += u.sampled < unit.elements
        assert u.errors[4] == pytest.approx(full.units[path].errors[4], rel=0.25)
    assert sampled_less > 10
    # FP8 block-scaled rows start on a 128-row block boundary.
    for i, unit in enumerate(project.units):
        if project.plan.decisions[i].action == "quantize" and len(unit.shape) == 2:
            source = project.inventory.by_name[unit.sources[0]]
            if source.encoding == "fp8" and source.companions:
                assert all(first % 128 == 0 for first, _, _ in sample_spans(project.plan, i, 4096))


def test_survey_reports_progress_and_cancels(tiny_model):
    project = Project.open(tiny_model("qwen3_moe"), "config-i")
    events = []
    survey(project, bits_options=(4,), progress=events.append)
    assert events[-1].done == events[-1].total == len(quantized_cells_units(project))
    token = CancelToken()
    token.cancel()
    with pytest.raises(SurveyCancelled):
        survey(project, cancel=token)


def quantized_cells_units(project):
    return [i for i, d in enumerate(project.plan.decisions) if d.action == "quantize"]


def test_fit_cli_keeps_within_target_and_writes_only_with_out(tiny_model, tmp_path, capsys):
    model = tiny_model("minimax_m3_vl", "mxfp8")
    project = Project.open(model, "config-i")
    target_gb = project.estimate.total_bytes * 0.8 / 1e9
    assert main(["fit", str(model), "--target-gb", f"{target_gb:.6f}", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"target_bytes", "bytes_before", "bytes_after", "fits", "error_before", "error_after", "changes",
            "policy"} <= set(data)
    assert data["fits"] and data["bytes_after"] <= data["target_bytes"] < data["bytes_before"]
    assert data["error_after"] > data["error_before"] > 0
    assert data["changes"] and all(c["new_bits"] < c["old_bits"] for c in data["changes"])
    assert data["written"] is None and not list(tmp_path.iterdir())
    out = tmp_path / "fit.json"
    assert main(["fit", str(model), "--target-gb", f"{target_gb:.6f}", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "->" in text and "error" in text and str(out) in text
    fitted = Project.open(model, str(out))
    assert fitted.estimate.total_bytes <= int(target_gb * 1e9)
    # Written compact, deciding every tensor as the proposal does.
    proposed = policy_from_dict(data["policy"])
    assert len(fitted.policy.rules) <= len(proposed.rules)
    project.set_policy(proposed)
    assert [(d.action, d.bits) for d in fitted.plan.decisions] == [(d.action, d.bits) for d in project.plan.decisions]


def test_fit_never_replaces_a_file_without_force_and_says_so_before_the_survey(tiny_model, tmp_path, capsys):
    model = tiny_model("llama")
    target_gb = Project.open(model, "config-i").estimate.total_bytes * 0.8 / 1e9
    mine = tmp_path / "mine.json"
    mine.write_text("my notes")
    assert main(["fit", str(model), "--target-gb", f"{target_gb:.6f}", "--out", str(mine)]) != 0
    err = capsys.readouterr().err
    assert f"{mine} already exists; choose another file or replace it with --force." in err
    assert "surveying" not in err and mine.read_text() == "my notes"
    assert main(["fit", str(model), "--target-gb", f"{target_gb:.6f}", "--out", str(tmp_path)]) != 0
    assert "is a folder" in capsys.readouterr().err
    assert main(["fit", str(model), "--target-gb", f"{target_gb:.6f}", "--out", str(tmp_path / "no" / "p.json")]) != 0
    assert "does not exist" in capsys.readouterr().err
    assert main(["fit", str(model), "--target-gb", f"{target_gb:.6f}", "--out", str(mine), "--force"]) == 0
    assert Project.open(model, str(mine)).estimate.total_bytes <= int(target_gb * 1e9)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.json"]  # no temporary file left beside it


def test_a_policy_write_that_fails_leaves_the_file_that_was_there(tmp_path, monkeypatch):
    import os

    from studio.core.errors import StudioError
    from studio.core.policy.bit_policy import resolve_policy

    path = tmp_path / "p.json"
    path.write_text("before")

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(StudioError, match="cannot write the policy to .*No space left on device"):
        resolve_policy("config-i").save(path)
    assert path.read_text() == "before" and [p.name for p in tmp_path.iterdir()] == ["p.json"]


def test_fit_for_a_mac_budgets_kv_cache_and_runtime(tiny_model, capsys):
    project = Project.open(tiny_model("qwen3_moe"), "config-i")
    budget = target_bytes(project, mac_gb=64, context=8192)
    assert budget == weights_budget_bytes(project.inventory.text_config, 64, 8192)
    assert project.memory_fit(64, 8192).limit_bytes - budget == project.memory_fit(64, 8192).kv_bytes + \
        project.memory_fit(64, 8192).overhead_bytes
    assert main(["fit", str(tiny_model("qwen3_moe")), "--mac", "64", "--context", "8192", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["target_bytes"] == budget
    assert main(["fit", str(tiny_model("qwen3_moe")), "--target-gb", "0.000001"]) == 2
    assert "below the smallest" in capsys.readouterr().err


def test_layers_text():
    assert layers_text((None, 0, 1, 2, 5, 7, 8)) == "outside, 0-2, 5, 7-8"
    assert layers_text((3,)) == "3"


def test_layer_profile_is_the_element_weighted_rms_by_family_and_layer():
    from studio.core.model.roles import FAMILIES

    def entry(role, layer, error, elements):
        return {"role": role, "layer": layer, "bits": 4, "group_size": 64, "mode": "affine",
                "relative_error": error, "elements": elements}

    data = {
        "a": entry("attn_q", 0, 0.03, 100), "b": entry("attn_k", 0, 0.06, 300), "c": entry("attn_q", 1, 0.05, 10),
        "d": entry("expert_down", 1, 0.2, 50), "e": entry("embedding", None, 0.01, 1000),
        "f": entry("expert_gate", 1, 0.4, 5), "g": entry("expert_up", 1, 0.3, 5),
    }
    profile = quant_errors.layer_profile(data)
    assert list(profile) == [f for f in FAMILIES if f in profile] == ["attention", "expert_gate_up", "expert_down"]
    assert profile["attention"][0] == pytest.approx(math.sqrt((100 * 0.03**2 + 300 * 0.06**2) / 400))
    assert profile["attention"][1] == pytest.approx(0.05)
    assert profile["expert_gate_up"] == {1: pytest.approx(math.sqrt((0.4**2 + 0.3**2) / 2))}
    assert profile["expert_down"] == {1: pytest.approx(0.2)}  # the embedding (outside the layers) is left out


def test_fit_refuses_an_unreachable_target_before_measuring_anything(tiny_model, capsys, monkeypatch):
    """Sizes alone say a target is below the smallest the policy reaches: no survey, no calibration
    pass first (on MiniMax-M3 that was 380 s of survey before the same sentence)."""
    from studio.commands import fit
    from studio.core.quant_error import survey as survey_module

    def measured(*args, **kwargs):
        raise AssertionError("measured before checking the target")

    monkeypatch.setattr(survey_module, "survey", measured)
    monkeypatch.setattr(fit, "run_calibration", measured)
    model = str(tiny_model("qwen3_moe"))
    for extra in ([], ["--sensitivity"]):
        assert main(["fit", model, "--target-gb", "0.000001", *extra]) == 2
        err = capsys.readouterr().err
        assert "below the smallest this policy can reach" in err and "Traceback" not in err


def test_a_survey_fits_only_the_model_and_policy_it_measured(tiny_model):
    from studio.core.budget.report import fit_to_budget
    from studio.core.errors import StudioError

    project = Project.open(tiny_model("qwen3_moe"), "config-i")
    measured = survey(project, max_elements_per_unit=4096)
    budget = project.estimate.total_bytes
    assert measured.mismatch(project) is None
    fit_to_budget(project, budget, measured)
    twin = Project.open(tiny_model("qwen3_moe", seed=1), "config-i")  # same tensor names, other weights
    assert measured.covers(twin.plan)  # what the dialog used to check, and all it checked
    with pytest.raises(StudioError, match="measured on .* not on the open model"):
        fit_to_budget(twin, budget, measured)
    other_policy = Project.open(tiny_model("qwen3_moe"), "uniform-2bit")
    with pytest.raises(StudioError, match="another policy"):
        fit_to_budget(other_policy, budget, measured)
    fewer_bits = survey(project, bits_options=(2, 4, 8), max_elements_per_unit=4096)
    with pytest.raises(StudioError, match="did not measure 3-bit"):
        fit_to_budget(project, budget, fewer_bits)
