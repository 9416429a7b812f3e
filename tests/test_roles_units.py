"""Roles and units for every supported architecture, checked against mlx-lm's own model classes."""

import pytest
from factory import ARCHS, MOE_ARCHS
from mlx.utils import tree_flatten
from mlx_lm.utils import _get_classes

from studio.core.policy.estimate import output_tensors
from studio.core.policy.bit_policy import Drop, Keep, Layers, Policy, Rule
from studio.core.project import Project

KEEP_ALL = Policy("keep", (Rule(("*",), Layers("all"), Keep()), Rule(("vision", "mtp"), Layers("all"), Drop())))


@pytest.mark.parametrize("arch", ARCHS)
def test_every_tensor_in_a_unit_with_a_known_role(arch, tiny_model):
    project = Project.open(tiny_model(arch), KEEP_ALL)
    assert project.architecture.known and not project.inventory.warnings
    covered = {name for unit in project.units for name in unit.sources}
    assert covered == {t.name for t in project.inventory.tensors}
    modules = [u for u in project.units if u.kind == "module"]
    assert modules and all(u.role != "other" for u in modules)
    roles = {u.role for u in project.units}
    assert {"attn_q", "attn_o", "norm", "embedding"} <= roles or {"attn_q_a", "attn_kv_b"} <= roles
    if arch in MOE_ARCHS:
        assert {"router", "expert_down"} <= roles
        assert any(u.experts > 1 for u in modules)


@pytest.mark.parametrize("arch", ARCHS)
def test_output_names_are_mlx_lm_parameters(arch, tiny_model):
    """Written under a keep-all policy, our tensor names and shapes are exactly the
    parameters of mlx-lm's model class: what `mlx_lm.load` checks strictly."""
    project = Project.open(tiny_model(arch), KEEP_ALL)
    config = project.inventory.config
    model_class, args_class = _get_classes(config)
    model = model_class(args_class.from_dict(config))
    expected = {name: tuple(p.shape) for name, p in tree_flatten(model.parameters())}
    # Parameters mlx-lm computes rather than loads.
    expected = {k: v for k, v in expected.items() if "rotary_emb" not in k}
    written = {name: shape for unit, decision in project.plan.rows()
               for name, shape, _ in output_tensors(unit, decision)}
    assert written == expected


def test_quantizable_modules_match_mlx_lm(tiny_model):
    """Everything mlx-lm could quantize in M3 is a module unit here, and nothing else is."""
    project = Project.open(tiny_model("minimax_m3_vl"), KEEP_ALL)
    config = project.inventory.config
    model_class, args_class = _get_classes(config)
    model = model_class(args_class.from_dict(config))
    quantizable = {path for path, m in model.named_modules() if hasattr(m, "to_quantized")}
    ours = {u.path for u in project.units if u.kind == "module" and u.role != "vision"}
    assert ours == quantizable


def test_every_role_sits_in_a_block_of_the_tree():
    from studio.core.model.roles import BLOCK_ORDER, ROLES, block_of

    assert all(block_of(role.key) in BLOCK_ORDER for role in ROLES)
    assert {block_of(r) for r in ("expert_gate", "expert_down", "shared_up", "router", "router_bias")} == {"MoE"}
    assert block_of("attn_kv_b") == "Attention" and block_of("mlp_down") == "MLP"
    assert block_of("no such role") == "Other"
