"""The converter's pre-write check against mlx-lm's own model class, on the full MiniMax-M3 layout."""

from __future__ import annotations

import pytest

from studio.core.errors import StudioError
from studio.core.convert.output_config import output_config
from studio.core.project import Project
from studio.core.convert.shard_layout import plan_layout
from studio.core.validation.loadable import check_parameters


@pytest.fixture(scope="module")
def m3_plan(m3_replica_mxfp8):
    project = Project.open(m3_replica_mxfp8, "config-i")
    layout = plan_layout(project.plan, 5 * 10**9)
    tensors = {s.name: (s.shape, s.dtype) for shard in layout.shards for s in shard.slots}
    return output_config(project.plan), tensors


def test_config_i_on_m3_is_what_mlx_lm_loads(m3_plan):
    config, tensors = m3_plan
    check_parameters(config, tensors, "the M3 output")  # 60 layers, 128 experts: built lazily, nothing allocated


def test_a_missing_or_misshapen_parameter_is_named(m3_plan):
    config, tensors = m3_plan
    name = "language_model.model.layers.30.block_sparse_moe.switch_mlp.down_proj.weight"
    missing = {k: v for k, v in tensors.items() if k != name}
    with pytest.raises(StudioError, match=r"would lack 1 parameter.*layers\.30\.block_sparse_moe\.switch_mlp\.down_proj"):
        check_parameters(config, missing, "the M3 output")
    shape, dtype = tensors[name]
    wrong = {**tensors, name: ((shape[0] - 1, *shape[1:]), dtype)}  # one expert short
    with pytest.raises(StudioError, match="expects"):
        check_parameters(config, wrong, "the M3 output")
