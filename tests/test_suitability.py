"""A preset meant for MoE applied to a dense model is named as such, and each model has a suitable preset."""

from __future__ import annotations

from studio.core.policy import load_preset
from studio.core.project import Project
from studio.core.suitability import is_moe, moe_policy_on_dense, suitable_preset
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
