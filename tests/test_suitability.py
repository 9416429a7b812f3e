"""A preset meant for MoE applied to a dense model is named as such, and each model has a suitable preset."""

from __future__ import annotations

from studio.core.policy.bit_policy import load_preset
from studio.core.project import Project
from studio.core.policy.suitability import is_moe, moe_policy_on_dense, suitable_preset
from studio.main import main


def dense_llama(folder, layers=8, hidden=128, inter=256):
    """A header-only dense llama with enough layers for Config-I to have middle layers (its
    boundaries are the first and last two)."""
    import json

    from factory import st

    shapes = {"model.embed_tokens.weight": (512, hidden), "model.norm.weight": (hidden,),
              "lm_head.weight": (512, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}"
        for name in ("q", "k", "v", "o"):
            shapes[f"{p}.self_attn.{name}_proj.weight"] = (hidden, hidden)
        shapes[f"{p}.mlp.gate_proj.weight"] = shapes[f"{p}.mlp.up_proj.weight"] = (inter, hidden)
        shapes[f"{p}.mlp.down_proj.weight"] = (hidden, inter)
        shapes[f"{p}.input_layernorm.weight"] = shapes[f"{p}.post_attention_layernorm.weight"] = (hidden,)
    tensors = {name: st.Tensor("BF16", shape) for name, shape in shapes.items()}
    folder.mkdir(parents=True, exist_ok=True)
    st.write_file(folder / "model.safetensors", tensors, header_only=True)
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": 4,
        "num_key_value_heads": 4, "vocab_size": 512, "max_position_embeddings": 8192,
        "tie_word_embeddings": False, "rms_norm_eps": 1e-5}))
    return folder


def test_config_i_on_a_dense_model_says_so(tmp_path):
    dense = Project.open(dense_llama(tmp_path / "llama"), "config-i")
    assert not is_moe(dense.units) and suitable_preset(dense.units) == "uniform-4bit"
    sentence = moe_policy_on_dense(dense.plan)
    assert sentence.startswith("Config-I is meant for Mixture-of-Experts models")
    assert "MLP projections at 2-bit, below attention (4-bit)" in sentence
    assert sentence in dense.warnings
    dense.set_policy(load_preset("uniform-4bit"))
    assert moe_policy_on_dense(dense.plan) == "" and dense.warnings == []


def test_config_i_on_an_moe_model_is_fine(tiny_model):
    moe = Project.open(tiny_model("minimax_m3_vl"), "config-i")
    assert is_moe(moe.units) and suitable_preset(moe.units) == "config-i"
    assert moe_policy_on_dense(moe.plan) == ""


def test_the_commands_say_it(capsys, tmp_path):
    model = str(dense_llama(tmp_path / "llama"))
    for argv in (["inspect", model], ["estimate", model, "--policy", "config-i"]):
        assert main(argv) == 0
        assert "meant for Mixture-of-Experts models" in capsys.readouterr().out
    # convert says it before it starts (this header-only model has no data to convert)
    main(["convert", model, str(tmp_path / "out"), "--policy", "config-i", "--no-errors"])
    assert "meant for Mixture-of-Experts models" in capsys.readouterr().err


def test_rules_that_match_nothing_in_a_dense_model(tmp_path, tiny_model):
    from studio.core.policy.suitability import rules_matching_nothing

    dense = Project.open(dense_llama(tmp_path / "llama"), "config-i")
    idle = {role for i in rules_matching_nothing(dense.policy, dense.grid) for role in dense.policy.rules[i].roles}
    assert {"router", "indexer", "vision"} <= idle <= {"router", "router_bias", "indexer", "vision", "mtp"}
    moe = Project.open(tiny_model("minimax_m3_vl"), "config-i")
    assert not any("routing" in moe.policy.rules[i].note for i in rules_matching_nothing(moe.policy, moe.grid))


def test_the_memory_fit_defaults_to_the_models_own_context_limit(tmp_path, capsys):
    import json

    model = str(dense_llama(tmp_path / "llama"))  # max_position_embeddings 8192
    assert Project.open(model).memory_fit(256).context == 8192
    assert main(["estimate", model, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fit"]["context"] == 8192
    assert main(["estimate", model, "--json", "--context", "4096"]) == 0
    assert json.loads(capsys.readouterr().out)["fit"]["context"] == 4096


def test_convert_writes_plain_progress_lines_into_a_log(tiny_model, tmp_path, capsys):
    assert main(["convert", str(tiny_model("llama")), str(tmp_path / "out"), "--policy", "uniform-4bit",
                 "--no-errors"]) == 0
    err = capsys.readouterr().err  # captured: not a terminal, as a log file is not
    assert "\r" not in err
    lines = [line for line in err.splitlines() if "%" in line]
    assert 1 <= len(lines) <= 2 * 100 / 5 + 6 and lines[-1].split()[1] == "100.0%"
