"""The dequantizer reads only the rows it is asked for and gives back the exact source values."""

import shutil

import mlx.core as mx
import numpy as np
import pytest
from factory import reference_weights

from studio.core.model.dequantize import SourceReader, dequantize, read_rows
from studio.core.errors import StudioError
from studio.core.model.inventory import open_model


def _values(reader, tensor, first=0, stop=None):
    return np.array(dequantize(read_rows(reader, tensor, first, stop)).astype(mx.float32))


@pytest.mark.parametrize("arch,source_format", [
    ("minimax_m3_vl", "mxfp8"), ("deepseek_v3", "fp8"), ("minimax", "fp8"),
    ("qwen3", "bf16"), ("llama", "f16"), ("mixtral", "f32"),
])
def test_every_tensor_matches_the_reference_exactly(tiny_model, arch, source_format):
    path = tiny_model(arch, source_format)
    inventory = open_model(path)
    reference = reference_weights(path)
    reader = SourceReader(inventory.root)
    encodings = set()
    for tensor in inventory.tensors:
        encodings.add(tensor.encoding)
        np.testing.assert_array_equal(_values(reader, tensor), reference[tensor.name], err_msg=tensor.name)
    reader.close()
    expected = {"mxfp8": "mxfp8", "fp8": "fp8"}.get(source_format, "float")
    assert expected in encodings


def test_row_ranges_read_only_their_rows(tiny_model):
    """FP8 blocks: rows from a block boundary, with a partial last block (144 rows)."""
    path = tiny_model("deepseek_v3", "fp8")
    inventory = open_model(path)
    reference = reference_weights(path)
    reader = SourceReader(inventory.root)
    tensor = inventory.by_name["model.layers.0.self_attn.kv_a_proj_with_mqa.weight"]
    assert tensor.shape[0] == 144 and tensor.encoding == "fp8"
    np.testing.assert_array_equal(_values(reader, tensor, 128, 144), reference[tensor.name][128:144])
    mx_path = tiny_model("minimax_m3_vl", "mxfp8")
    mx_inventory = open_model(mx_path)
    mx_reader = SourceReader(mx_inventory.root)
    name = "language_model.model.layers.1.block_sparse_moe.experts.3.w2.weight"
    rows = _values(mx_reader, mx_inventory.by_name[name], 5, 17)
    np.testing.assert_array_equal(rows, reference_weights(mx_path)[name][5:17])
    reader.close()
    mx_reader.close()


def test_mlx_quantized_source_dequantizes_like_mlx(tiny_model, tmp_path):
    from studio.core.convert import convert
    from studio.core.project import Project

    out = tmp_path / "q4"
    convert(Project.open(tiny_model("qwen3_moe"), "uniform-4bit"), out)
    inventory = open_model(out)
    assert inventory.source_format == "mlx"
    reader = SourceReader(inventory.root)
    stored = {}
    for f in sorted(out.glob("model*.safetensors")):
        stored.update(mx.load(str(f)))
    checked = 0
    for tensor in inventory.tensors:
        if tensor.encoding != "mlx":
            continue
        base = tensor.name[: -len(".weight")]
        expected = mx.dequantize(stored[tensor.name], stored[f"{base}.scales"], stored[f"{base}.biases"],
                                 group_size=64, bits=tensor.quant["bits"])
        np.testing.assert_array_equal(_values(reader, tensor), np.array(expected.astype(mx.float32)))
        checked += 1
    reader.close()
    assert checked > 10


def test_a_shard_truncated_after_opening_fails_clearly(tiny_model, tmp_path):
    src = shutil.copytree(tiny_model("llama"), tmp_path / "llama")
    inventory = open_model(src)
    tensor = max(inventory.tensors, key=lambda t: t.data.end)
    with open(src / tensor.shard, "r+b") as f:
        f.truncate(tensor.data.end - 10)
    reader = SourceReader(inventory.root)
    with pytest.raises(StudioError, match="truncated"):
        read_rows(reader, tensor)
    reader.close()
