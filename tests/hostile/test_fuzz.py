"""Random values in every header, config and policy field the studio reads: each input is either
opened or refused with a StudioError, never a traceback (a bounded, reproducible run)."""

from __future__ import annotations

import json
import shutil
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studio.core.errors import StudioError
from studio.core.convert.output_config import output_config
from studio.core.policy.bit_policy import policy_from_dict
from studio.core.project import Project
from studio.core.validation.loadable import check_parameters

FUZZ = settings(max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", 120)), deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)
# Plausible-looking numbers too, so the fuzz reaches past the type checks into the arithmetic.
numbers = st.integers(min_value=-3, max_value=1025) | st.sampled_from([0, 1, 2, 4, 8, 16, 32, 64, 128, 512, 2**31])
values = json_values | numbers

CONFIG_FIELDS = ["num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                 "num_key_value_heads", "head_dim", "vocab_size", "model_type", "text_config", "quantization",
                 "quantization_config", "torch_dtype", "tie_word_embeddings", "architectures", "num_experts",
                 "num_experts_per_tok", "moe_intermediate_size", "kv_lora_rank", "v_head_dim", "qk_nope_head_dim"]


@pytest.fixture(scope="module")
def folders(tiny_model, tmp_path_factory):
    def copy(arch):
        return shutil.copytree(tiny_model(arch, shards=1), tmp_path_factory.mktemp("fuzz") / arch)

    return {"llama": copy("llama"), "qwen3_moe": copy("qwen3_moe")}


def _opened_or_refused(folder, deep: bool) -> None:
    try:
        project = Project.open(folder, "config-i")
        project.memory_fit(256, 32768)
        if deep:
            from studio.core.convert.shard_layout import plan_layout

            layout = plan_layout(project.plan, 10**9)
            check_parameters(output_config(project.plan),
                             {s.name: (s.shape, s.dtype) for shard in layout.shards for s in shard.slots}, "output")
    except StudioError:
        pass


@FUZZ
@given(arch=st.sampled_from(["llama", "qwen3_moe"]), field=st.sampled_from(CONFIG_FIELDS),
       value=values | st.just("__delete__"), deep=st.booleans())
def test_config_fields(folders, arch, field, value, deep):
    folder = folders[arch]
    path = folder / "config.json"
    original = path.read_bytes()
    config = json.loads(original)
    if value == "__delete__":
        config.pop(field, None)
    else:
        config[field] = value
    path.write_text(json.dumps(config))
    try:
        _opened_or_refused(folder, deep)
    finally:
        path.write_bytes(original)


@FUZZ
@given(field=st.sampled_from(["dtype", "shape", "data_offsets", "__entry__", "__name__"]), value=values,
       which=st.integers(min_value=0, max_value=30))
def test_header_fields(folders, field, value, which):
    path = folders["llama"] / "model.safetensors"
    original = path.read_bytes()
    (n,) = struct.unpack("<Q", original[:8])
    header = json.loads(original[8:8 + n])
    names = [k for k in header if k != "__metadata__"]
    name = names[which % len(names)]
    if field == "__entry__":
        header[name] = value
    elif field == "__name__":
        header[str(value)[:40]] = header.pop(name)
    else:
        header[name][field] = value
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + original[8 + n:])
    try:
        _opened_or_refused(folders["llama"], deep=False)
    finally:
        path.write_bytes(original)


@FUZZ
@given(data=st.binary(max_size=64))
def test_header_bytes(folders, data):
    path = folders["llama"] / "model.safetensors"
    original = path.read_bytes()
    (n,) = struct.unpack("<Q", original[:8])
    path.write_bytes(original[:8] + data[:n].ljust(n, b" ") + original[8 + n:] if data[:1] != b"\0"
                     else struct.pack("<Q", len(data)) + data)
    try:
        _opened_or_refused(folders["llama"], deep=False)
    finally:
        path.write_bytes(original)


rules = st.lists(st.fixed_dictionaries(
    {"roles": st.sampled_from([["*"], ["attention"], ["experts"], "mlp_down"]) | values,
     "layers": st.sampled_from(["all", "none", {"first": 2}, {"range": [0, 1]}]) | values,
     "action": st.sampled_from(["drop", {"keep": "bfloat16"}]) | st.fixed_dictionaries(
         {"quantize": st.dictionaries(st.sampled_from(["bits", "group_size", "mode"]), values, max_size=3)}) | values},
), max_size=3)


@FUZZ
@given(rules=rules | values, top=st.dictionaries(st.sampled_from(["format", "version", "name", "warning"]), values,
                                                 max_size=2))
def test_policy_fields(folders, rules, top):
    try:
        policy = policy_from_dict({**top, "rules": rules})
    except StudioError:
        return
    Project(Project.open(folders["qwen3_moe"], "config-i").inventory, policy)  # applies, with no surprises
