"""MiniMax-M3 at full scale, from header-only replicas: roles, units and the seed's figures."""

import pytest

from studio.core.policy.bit_policy import load_preset
from studio.core.project import Project
from studio.main import main


@pytest.fixture(scope="module")
def m3(m3_replica_mxfp8):
    return Project.open(m3_replica_mxfp8, "config-i")


def test_opens_and_knows_the_format(m3_replica_mxfp8):
    # How fast it opens is bench/bench_estimate.py's figure, not a timed test.
    project = Project.open(m3_replica_mxfp8)
    raw_entries = sum(1 + len(t.companions) for t in project.inventory.tensors)
    assert 45_000 < raw_entries < 46_500 and len(project.inventory.shards) == 90
    assert project.inventory.source_format == "mxfp8"
    assert project.num_layers == 60 and project.architecture.known


def test_units_follow_mlx_lm_names(m3):
    paths = {u.path: u for u in m3.units}
    p = "language_model.model.layers"
    gate = paths[f"{p}.30.block_sparse_moe.switch_mlp.gate_proj"]
    assert gate.shape == (128, 3072, 6144) and gate.role == "expert_gate" and len(gate.sources) == 128
    assert paths[f"{p}.30.block_sparse_moe.switch_mlp.down_proj"].shape == (128, 6144, 3072)
    assert paths[f"{p}.1.mlp.down_proj"].shape == (6144, 12288) and paths[f"{p}.1.mlp.down_proj"].role == "mlp_down"
    assert paths[f"{p}.30.block_sparse_moe.shared_experts.up_proj"].role == "shared_up"
    assert paths[f"{p}.30.block_sparse_moe.gate"].role == "router"
    assert paths[f"{p}.30.self_attn.index_q_proj"].role == "indexer"
    assert f"{p}.1.self_attn.index_q_proj" not in paths  # the indexer lives on MoE layers only
    roles = {u.role for u in m3.units}
    assert {"vision", "router_bias", "norm", "embedding", "lm_head", "attn_q"} <= roles


def test_config_i_gives_the_seed_figures(m3):
    est = m3.estimate
    # The seed: "~167 GB, 3.097 bpw" over quantized weights, vision and indexer kept bf16.
    assert est.total_bytes / 1e9 == pytest.approx(167.1, rel=0.005)
    assert est.bpw_quantized == pytest.approx(3.097, rel=0.005)
    # Vision tower and indexer kept in bf16: two bytes per parameter. The indexer from the
    # config: on each MoE layer, index_q_proj [heads*dim, hidden], index_k_proj [dim, hidden]
    # and two norms [dim]. The vision side by its tensor names (0.87B parameters).
    text = m3.inventory.text_config
    sparse = text["sparse_attention_config"]
    moe_layers = sum(sparse["sparse_attention_freq"])  # the indexer sits on the MoE layers
    heads, dim, hidden = sparse["sparse_num_index_heads"], sparse["sparse_index_dim"], text["hidden_size"]
    indexer = moe_layers * ((heads + 1) * dim * hidden + 2 * dim)
    vision = sum(t.elements for t in m3.inventory.tensors
                 if t.name.startswith(("vision_tower.", "multi_modal_projector.", "patch_merge_mlp.")))
    assert vision == pytest.approx(0.87e9, rel=0.01)
    assert est.by_role["indexer"] == 2 * indexer
    assert est.by_role["vision"] == 2 * vision


def test_decisions_at_scale(m3):
    by_path = {u.path: d for u, d in m3.plan.rows()}
    p = "language_model.model.layers"
    assert by_path[f"{p}.30.block_sparse_moe.switch_mlp.gate_proj"].bits == 2
    assert by_path[f"{p}.30.block_sparse_moe.switch_mlp.down_proj"].bits == 3
    assert by_path[f"{p}.59.block_sparse_moe.switch_mlp.down_proj"].bits == 8
    assert by_path[f"{p}.2.mlp.gate_proj"].bits == 2
    assert by_path[f"{p}.0.self_attn.q_proj"].bits == 8
    assert by_path[f"{p}.30.block_sparse_moe.gate"].dtype == "F16"
    assert by_path[f"{p}.30.block_sparse_moe.e_score_correction_bias"].dtype == "F32"


def test_uniform_and_bf16_replica_agree(m3_replica_bf16, m3):
    bf16 = Project.open(m3_replica_bf16, "config-i")
    # Same model, different source format: identical output.
    assert bf16.estimate.total_bytes == m3.estimate.total_bytes
    assert bf16.inventory.total_bytes > 1.9 * m3.inventory.total_bytes
    assert bf16.set_policy(load_preset("uniform-4bit")).bpw_quantized == pytest.approx(4.5, rel=0.01)


def test_estimate_json_at_scale(m3_replica_mxfp8, capsys):
    import json

    assert main(["estimate", str(m3_replica_mxfp8), "--json", "--mac", "256", "--context", "32768"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["fit"]["fits"] and round(data["bpw_quantized"], 2) == 3.10
