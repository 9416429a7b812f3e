"""Opening models: headers only, scale companions grouped, and one clear sentence for bad input."""

import json
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file

from studio.core.errors import StudioError
from studio.core.model.inventory import open_model
from studio.main import main


def _folder(tmp_path, tensors=None, config=None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    if config is not False:
        (tmp_path / "config.json").write_text(json.dumps(config or {"model_type": "llama", "num_hidden_layers": 1}))
    if tensors is not None:
        save_file(tensors, str(tmp_path / "model.safetensors"))
    return tmp_path


def _raw_shard(path, header: dict, data_len: int):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * data_len)


def test_reads_headers_with_shapes_dtypes_bytes(tmp_path):
    folder = _folder(tmp_path, {"model.layers.0.self_attn.q_proj.weight": np.zeros((8, 16), np.float16),
                                "model.norm.weight": np.zeros((16,), np.float32)})
    inv = open_model(folder)
    q = inv.by_name["model.layers.0.self_attn.q_proj.weight"]
    assert (q.shape, q.dtype, q.nbytes, q.shard) == ((8, 16), "F16", 256, "model.safetensors")
    assert inv.by_name["model.norm.weight"].nbytes == 64
    assert inv.source_format == "float"
    assert inv.total_bytes == 256 + 64


def test_fp8_scales_belong_to_their_weight(tmp_path):
    header = {
        "model.layers.0.mlp.down_proj.weight": {"dtype": "F8_E4M3", "shape": [256, 256], "data_offsets": [0, 65536]},
        "model.layers.0.mlp.down_proj.weight_scale_inv": {"dtype": "F32", "shape": [2, 2], "data_offsets": [65536, 65552]},
    }
    _folder(tmp_path, config={"model_type": "minimax", "num_hidden_layers": 1})
    _raw_shard(tmp_path / "model.safetensors", header, 65552)
    inv = open_model(tmp_path)
    assert [t.name for t in inv.tensors] == ["model.layers.0.mlp.down_proj.weight"]
    weight = inv.tensors[0]
    assert weight.encoding == "fp8" and weight.nbytes == 65552 and "weight_scale_inv" in weight.companions
    assert inv.source_format == "fp8"


def test_mxfp8_is_recognised(tmp_path):
    header = {
        "w.weight": {"dtype": "F8_E4M3", "shape": [4, 64], "data_offsets": [0, 256]},
        "w.weight_scale_inv": {"dtype": "U8", "shape": [4, 2], "data_offsets": [256, 264]},
    }
    _folder(tmp_path)
    _raw_shard(tmp_path / "model.safetensors", header, 264)
    inv = open_model(tmp_path)
    assert inv.source_format == "mxfp8" and inv.tensors[0].encoding == "mxfp8"


def test_mlx_quantized_source_gets_logical_shape(tmp_path):
    import mlx.core as mx

    w = mx.random.normal((32, 128))
    wq, scales, biases = mx.quantize(w, group_size=64, bits=4)
    tensors = {"model.layers.0.mlp.up_proj.weight": np.array(wq), "model.layers.0.mlp.up_proj.scales": np.array(scales),
               "model.layers.0.mlp.up_proj.biases": np.array(biases)}
    _folder(tmp_path, tensors, {"model_type": "llama", "num_hidden_layers": 1,
                                "quantization": {"group_size": 64, "bits": 4}})
    inv = open_model(tmp_path)
    (t,) = inv.tensors
    assert t.shape == (32, 128) and t.encoding == "mlx" and t.quant == {"bits": 4, "group_size": 64, "mode": "affine"}
    assert inv.source_format == "mlx"


def test_sharded_folder_with_index(tmp_path):
    _folder(tmp_path)
    save_file({"a.weight": np.zeros((2, 2), np.float16)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({"b.weight": np.zeros((2, 2), np.float16)}, str(tmp_path / "model-00002-of-00002.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors"}}))
    inv = open_model(tmp_path)
    assert {t.shard for t in inv.tensors} == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}


BAD_INPUTS = {
    "missing config": (lambda p: _folder(p, {"a": np.zeros(2, np.float32)}, config=False), "has no config.json"),
    "no safetensors": (lambda p: _folder(p), "holds no .safetensors files"),
    "header not json": (lambda p: (_folder(p), (p / "model.safetensors").write_bytes(struct.pack("<Q", 5) + b"{nope")),
                        "not valid JSON"),
    "header claims too much": (lambda p: (_folder(p), _raw_shard(p / "model.safetensors",
                               {"a": {"dtype": "F32", "shape": [100], "data_offsets": [0, 400]}}, 40)), "truncated"),
    "overlapping offsets": (lambda p: (_folder(p), _raw_shard(p / "model.safetensors", {
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, 24)), "overlap"),
    "unknown dtype": (lambda p: (_folder(p), _raw_shard(p / "model.safetensors",
                      {"a": {"dtype": "F7", "shape": [4], "data_offsets": [0, 4]}}, 4)), "unknown dtype"),
    "length field huge": (lambda p: (_folder(p), (p / "model.safetensors").write_bytes(struct.pack("<Q", 2**40) + b"{}")),
                          "truncated or not a safetensors file"),
    "config not json": (lambda p: (_folder(p, {"a": np.zeros(2, np.float32)}, config=False),
                        (p / "config.json").write_text("{")), "not valid JSON"),
    "not a folder": (lambda p: None, "does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gets_one_sentence_and_nonzero_exit(case, tmp_path, capsys):
    make, expected = BAD_INPUTS[case]
    folder = tmp_path / "model"
    if case != "not a folder":
        make(folder)
    with pytest.raises(StudioError, match=expected):
        open_model(folder)
    assert main(["inspect", str(folder)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and err.count("\n") == 1


def test_inspect_json_counts(tmp_path, capsys):
    folder = _folder(tmp_path, {"model.layers.0.self_attn.q_proj.weight": np.zeros((8, 16), np.float16),
                                "model.embed_tokens.weight": np.zeros((32, 16), np.float16)})
    assert main(["inspect", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["tensors"] == 2 and info["by_role"]["attn_q"]["bytes"] == 256
    assert info["by_role"]["embedding"]["elements"] == 512


def test_unknown_architecture_opens_with_warning(tmp_path, capsys):
    folder = _folder(tmp_path, {"model.layers.0.mlp.down_proj.weight": np.zeros((8, 16), np.float16)},
                     {"model_type": "brand_new_arch", "num_hidden_layers": 1})
    assert main(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "not one Config-I Studio knows" in out and "Dense MLP down" in out
