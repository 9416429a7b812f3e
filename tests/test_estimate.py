"""The estimate is exact: every unit's bytes equal what mx.quantize produces."""

import json

import mlx.core as mx
import numpy as np
import pytest
from safetensors.numpy import save_file

from studio.core.dtypes import nbytes
from studio.core.policy.estimate import output_tensors
from studio.core.policy.plan import decide
from studio.core.policy.bit_policy import PRESET_NAMES, Drop, Layers, Quantize, Rule, load_preset
from studio.core.project import Project
from studio.core.model.unit import Unit
from studio.main import main

MX_DTYPES = {"BF16": mx.bfloat16, "F16": mx.float16, "F32": mx.float32}
CASES = [(2, 64, "affine"), (3, 64, "affine"), (4, 32, "affine"), (5, 128, "affine"), (6, 64, "affine"),
         (8, 64, "affine"), (4, 32, "mxfp4"), (4, 16, "nvfp4"), (8, 32, "mxfp8")]


@pytest.mark.parametrize("bits,group,mode", CASES)
@pytest.mark.parametrize("shape", [(48, 256), (3, 40, 128)])
def test_output_tensors_match_mx_quantize(bits, group, mode, shape):
    unit = Unit("model.layers.0.mlp.switch_mlp.up_proj", "expert_up", 0, "module", shape, ("x",), "BF16", "stack")
    decision = decide(unit, Quantize(bits, group, mode), 0, "BF16")
    predicted = output_tensors(unit, decision)
    arrays = mx.quantize(mx.zeros(shape, dtype=mx.bfloat16), group_size=group, bits=bits, mode=mode)
    assert len(predicted) == len(arrays)
    for (name, pshape, dtype), array in zip(predicted, arrays):
        assert tuple(array.shape) == pshape, name
        assert array.nbytes == nbytes(pshape, dtype), name
        if dtype in MX_DTYPES:
            assert array.dtype == MX_DTYPES[dtype]


def test_affine_formula_from_design():
    # N*bits/8 + 2*(N/gs)*2 for bf16 scales and biases.
    unit = Unit("m", "attn_q", 0, "module", (1024, 4096), ("x",), "BF16")
    n = 1024 * 4096
    for bits in (2, 3, 4, 8):
        size = sum(nbytes(s, d) for _, s, d in output_tensors(unit, decide(unit, Quantize(bits, 64), 0, "BF16")))
        assert size == n * bits // 8 + 2 * (n // 64) * 2


def test_module_not_divisible_by_group_is_kept_with_a_note():
    unit = Unit("m", "attn_q", 0, "module", (64, 96), ("x",), "BF16")
    decision = decide(unit, Quantize(4, 64), 3, "BF16")
    assert decision.action == "keep" and decision.dtype == "BF16" and "not divisible" in decision.note
    assert decision.rule == 3
    assert decide(unit, Quantize(4, 32), 3, "BF16").action == "quantize"


def _tiny_moe(tmp_path, layers=6, hidden=128, experts=4):
    t = {"model.embed_tokens.weight": np.zeros((512, hidden), np.float16),
         "lm_head.weight": np.zeros((512, hidden), np.float16),
         "model.norm.weight": np.zeros((hidden,), np.float32)}
    for l in range(layers):
        p = f"model.layers.{l}."
        for proj in "qkvo":
            t[p + f"self_attn.{proj}_proj.weight"] = np.zeros((hidden, hidden), np.float16)
        t[p + "input_layernorm.weight"] = np.zeros((hidden,), np.float16)
        t[p + "mlp.gate.weight"] = np.zeros((experts, hidden), np.float16)
        for e in range(experts):
            for proj, shape in (("gate_proj", (64, hidden)), ("up_proj", (64, hidden)), ("down_proj", (hidden, 64))):
                t[p + f"mlp.experts.{e}.{proj}.weight"] = np.zeros(shape, np.float16)
    save_file(t, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_moe", "num_hidden_layers": layers,
                                                      "torch_dtype": "float16", "hidden_size": hidden,
                                                      "num_attention_heads": 4, "num_key_value_heads": 2}))
    return tmp_path


def test_units_stack_experts_under_mlx_names(tmp_path):
    project = Project.open(_tiny_moe(tmp_path), "config-i")
    paths = {u.path: u for u in project.units}
    stacked = paths["model.layers.3.mlp.switch_mlp.down_proj"]
    assert stacked.shape == (4, 128, 64) and stacked.transform == "stack" and len(stacked.sources) == 4
    assert stacked.role == "expert_down" and stacked.layer == 3
    # Every source tensor lands in exactly one unit.
    sources = [s for u in project.units for s in u.sources]
    assert sorted(sources) == sorted(t.name for t in project.inventory.tensors)


def test_plan_records_the_deciding_rule(tmp_path):
    project = Project.open(_tiny_moe(tmp_path), "config-i")
    rules = project.policy.rules
    for unit, decision in project.plan.rows():
        assert decision.rule is not None
        assert rules[decision.rule].matches(unit.role, unit.layer, 6)
    by_path = {u.path: d for u, d in project.plan.rows()}
    assert by_path["model.layers.3.mlp.switch_mlp.gate_proj"].bits == 2
    assert by_path["model.layers.3.mlp.switch_mlp.down_proj"].bits == 3
    assert by_path["model.layers.5.mlp.switch_mlp.down_proj"].bits == 8
    assert by_path["model.layers.3.mlp.gate"].dtype == "F16" and by_path["model.layers.3.mlp.gate"].action == "keep"
    # f16 checkpoint: scales follow the model's float dtype.
    assert by_path["model.layers.3.self_attn.q_proj"].dtype == "F16"


def test_estimate_totals_and_breakdowns_add_up(tmp_path):
    project = Project.open(_tiny_moe(tmp_path))
    for name in PRESET_NAMES:
        est = project.set_policy(load_preset(name))
        assert sum(est.unit_bytes) == est.total_bytes == sum(est.by_role.values()) == sum(est.by_layer.values())
        assert est.source_bytes == project.inventory.total_bytes
        manual = sum(nbytes(s, d) for u, dec in project.plan.rows() for _, s, d in output_tensors(u, dec))
        assert manual == est.total_bytes
    assert project.set_policy(load_preset("uniform-2bit")).total_bytes < project.set_policy(
        load_preset("uniform-8bit")).total_bytes


def test_bpw_figures(tmp_path):
    project = Project.open(_tiny_moe(tmp_path), "uniform-4bit")
    est = project.estimate
    # group 64 with f16 scales+biases adds 32/64 bits: 4.5 bpw, 8.5 for the 8-bit routers.
    quantized = [(u.elements, d.bits) for u, d in project.plan.rows() if d.action == "quantize"]
    expected = sum(n * (bits + 0.5) for n, bits in quantized) / sum(n for n, _ in quantized)
    assert {bits for _, bits in quantized} == {4, 8}
    assert est.bpw_quantized == pytest.approx(expected, rel=1e-12)
    assert est.bpw_output > est.bpw_quantized  # the f16/f32 norms and the f16 router weigh more


def test_drop_removes_bytes(tmp_path):
    project = Project.open(_tiny_moe(tmp_path))
    before = project.estimate.total_bytes
    policy = project.policy.with_rules(project.policy.rules + (Rule(("experts",), Layers("all"), Drop()),))
    after = project.set_policy(policy)
    assert after.by_role.get("expert_down", 0) == 0 and after.total_bytes < before


def test_estimate_cli_json(tmp_path, capsys):
    folder = _tiny_moe(tmp_path)
    assert main(["estimate", str(folder), "--policy", "uniform-4bit", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"total_bytes", "bpw_quantized", "bpw_output", "by_role", "fit"} <= set(data)
    assert data["total_bytes"] == Project.open(folder, "uniform-4bit").estimate.total_bytes
    assert main(["estimate", str(folder), "--policy", "nonsense"]) == 2
    assert "unknown preset 'nonsense'" in capsys.readouterr().err


def test_memory_fit(tmp_path):
    project = Project.open(_tiny_moe(tmp_path))
    fit = project.memory_fit(64, 4096)
    # K and V, 6 layers, 2 KV heads of 128/4 = 32, bf16.
    assert fit.fits and fit.kv_bytes == 2 * 6 * 2 * 32 * 4096 * 2
    assert fit.limit_bytes == int(64 * 2**30 * 0.75)
    # The parts, as the size panel shows them, add up to the sentence the command line prints.
    assert fit.sentence() == f"fits a 64 GB Mac at 4,096 tokens of context: {fit.needs}"
    # One unit across the app (issue 18: "GB and GiB side by side"): GB = 10^9 bytes, as the sizes.
    assert fit.needs == (f"needs {(fit.weights_bytes + fit.kv_bytes + fit.overhead_bytes) / 1e9:.1f} GB "
                         f"of the 51.5 GB the GPU may use by default")
    tight = project.memory_fit(64, 10**9)
    assert not tight.fits and tight.verdict == "does not fit"


def test_source_bytes_count_every_source_tensor_once(tiny_model):
    # DeepSeek's kv_b_proj is read by two units (embed_q, unembed_out): its bytes are shared, not doubled.
    project = Project.open(tiny_model("deepseek_v3"), "uniform-4bit")
    checkpoint = sum(t.nbytes for t in project.inventory.tensors)
    unit_source = project.source_sizes.unit_source
    assert sum(unit_source) == project.estimate.source_bytes == checkpoint
    kv_b = [i for i, u in enumerate(project.units) if u.transform.startswith("kv_b")]
    assert kv_b
    for i in kv_b:
        whole = project.inventory.by_name[project.units[i].sources[0]].nbytes
        assert unit_source[i] == whole // 2
    assert sum(project.estimate.by_role_source.values()) == checkpoint


def test_no_gib_anywhere_the_user_reads():
    """Issue 18: sizes in GB beside memory in GiB. The convention (studio/core/formatting.py) is GB =
    10^9 bytes everywhere: no string the app can show or write (docstrings aside) holds GiB, MiB or KiB."""
    import ast
    import re
    from pathlib import Path

    import studio

    root = Path(studio.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)}
        offenders += [f"{path.relative_to(root)}:{node.lineno}" for node in ast.walk(tree)
                      if isinstance(node, ast.Constant) and isinstance(node.value, str)
                      and id(node) not in docstrings and re.search(r"\b[KMGT]iB\b", node.value)]
    assert not offenders
