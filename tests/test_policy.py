"""Policies: precedence, presets, JSON round trip, and errors that say where."""

import json

import pytest

from studio.core.errors import StudioError
from studio.core.policy.bit_policy import (PRESET_NAMES, Drop, Keep, Layers, Policy, Quantize, Rule, load_policy_file,
                                load_preset, policy_from_dict, resolve_policy)


def test_later_rules_override_earlier_ones():
    policy = Policy("t", (
        Rule(("*",), Layers("all"), Keep()),
        Rule(("attention",), Layers("all"), Quantize(4)),
        Rule(("attn_q",), Layers("first", n=2), Quantize(8)),
        Rule(("attn_q",), Layers("last", n=1), Drop()),
    ))
    assert policy.decide("attn_q", 0, 10) == (Quantize(8), 2)
    assert policy.decide("attn_q", 5, 10) == (Quantize(4), 1)
    assert policy.decide("attn_q", 9, 10) == (Drop(), 3)
    assert policy.decide("norm", 5, 10) == (Keep(), 0)
    assert policy.decide("embedding", None, 10) == (Keep(), 0)


def test_layer_selectors():
    assert [l for l in range(10) if Layers("first", n=2).matches(l, 10)] == [0, 1]
    assert [l for l in range(10) if Layers("last", n=2).matches(l, 10)] == [8, 9]
    assert [l for l in range(10) if Layers("range", start=3, stop=5).matches(l, 10)] == [3, 4, 5]
    assert [l for l in range(10) if Layers("list", items=(1, 7)).matches(l, 10)] == [1, 7]
    assert Layers("none").matches(None, 10) and not Layers("first", n=2).matches(None, 10)
    # mlx-lm's mixed recipe on 16 layers: first and last eighth, every third between.
    assert [l for l in range(16) if Layers("mlx_more_bits").matches(l, 16)] == [0, 1, 4, 7, 10, 13, 14, 15]


def test_config_i_preset_is_the_seed_table():
    policy = load_preset("config-i")
    n = 60
    assert policy.decide("expert_gate", 30, n)[0] == Quantize(2, 64)
    assert policy.decide("expert_up", 2, n)[0] == Quantize(2, 64)
    assert policy.decide("shared_up", 57, n)[0] == Quantize(2, 64)
    assert policy.decide("mlp_gate", 2, n)[0] == Quantize(2, 64)
    assert policy.decide("expert_down", 30, n)[0] == Quantize(3, 64)
    assert policy.decide("attn_o", 30, n)[0] == Quantize(4, 64)
    for layer in (0, 1, 58, 59):
        for role in ("attn_q", "expert_gate", "expert_down", "shared_down", "mlp_up"):
            assert policy.decide(role, layer, n)[0] == Quantize(8, 64), (role, layer)
    assert policy.decide("embedding", None, n)[0] == Quantize(8, 64)
    assert policy.decide("lm_head", None, n)[0] == Quantize(8, 64)
    assert policy.decide("router", 0, n)[0] == Keep("float16")
    assert policy.decide("router_bias", 30, n)[0] == Keep("float32")
    assert policy.decide("indexer", 30, n)[0] == Keep("bfloat16")
    assert policy.decide("vision", None, n)[0] == Keep("bfloat16")
    assert policy.decide("norm", 30, n)[0] == Keep("source")


def test_all_presets_load_and_uniform_2bit_warns():
    for name in PRESET_NAMES:
        assert load_preset(name).rules
    assert "break" in load_preset("uniform-2bit").warning
    assert load_preset("uniform-4bit").warning == ""


def test_json_round_trip(tmp_path):
    for name in PRESET_NAMES:
        policy = load_preset(name)
        path = tmp_path / f"{name}.json"
        policy.save(path)
        again = load_policy_file(path)
        assert again.rules == policy.rules and again.name == policy.name
        assert json.loads(path.read_text())["version"] == 1


BAD = [
    ({"rules": []}, "rules: a policy needs a non-empty list of rules"),
    ({"version": 9, "rules": [{"roles": ["*"], "action": "drop"}]}, "version: this studio reads policy version 1"),
    ({"rules": [{"roles": ["attn_z"], "action": "drop"}]}, "rule 1: unknown role 'attn_z'"),
    ({"rules": [{"roles": ["*"], "action": "drop"}, {"roles": ["*"], "action": {"quantize": {"bits": 7}}}]},
     "rule 2: affine takes bits 2, 3, 4, 5, 6, 8, not 7"),
    ({"rules": [{"roles": ["*"], "action": {"quantize": {"bits": 4, "group_size": 48}}}]},
     "rule 1: affine takes group size 32, 64, 128, not 48"),
    ({"rules": [{"roles": ["*"], "action": {"quantize": {"bits": 2, "mode": "mxfp4"}}}]},
     "rule 1: mxfp4 takes bits 4, not 2"),
    ({"rules": [{"roles": ["*"], "layers": {"first": -1}, "action": "drop"}]}, "rule 1: layers must be"),
    ({"rules": [{"roles": ["*"], "action": {"keep": "int4"}}]}, "rule 1: keep must be one of"),
    ({"rules": [{"roles": ["*"]}]}, "rule 1: missing action"),
    ({"rules": [{"roles": ["*"], "action": "drop", "colour": 1}]}, "rule 1: unknown key 'colour'"),
]


@pytest.mark.parametrize("data,message", BAD)
def test_bad_policy_names_problem_and_place(data, message, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(StudioError) as info:
        load_policy_file(path)
    assert str(info.value) == f"bad.json: {message}" or str(info.value).startswith(f"bad.json: {message}")


def test_policy_file_that_is_not_json_names_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "rules": [\n    {"roles": ["*"],, }\n  ]\n}')
    with pytest.raises(StudioError, match=r"bad.json: line 3, column"):
        load_policy_file(path)


def test_unknown_preset_name():
    with pytest.raises(StudioError, match="unknown preset 'config-j'"):
        resolve_policy("config-j")
    assert policy_from_dict({"rules": [{"roles": "*", "action": "drop"}]}).rules[0].action == Drop()
