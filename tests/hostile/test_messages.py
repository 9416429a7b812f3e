"""Errors from mlx-lm reach the user as one sentence, never as its list of every parameter."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from corpus import read_st, write_st

from studio.core.validation.loadable import one_sentence
from studio.main import main


def test_a_parameter_list_becomes_a_count_and_the_first_name():
    names = [f"model.layers.{i}.mlp.extra.weight" for i in range(39)]
    listed = ",\n".join(names)
    message = one_sentence(ValueError(f"Received 39 parameters not in model: \n{listed}."))
    assert message == "39 parameters the model does not have (first: model.layers.0.mlp.extra.weight)"
    assert one_sentence(ValueError("Missing 2 parameters: \na.weight,\nb.weight.")) == \
        "2 missing parameters (first: a.weight)"
    assert "\n" not in one_sentence(RuntimeError("first line\nsecond line"))


def test_chat_with_a_model_mlx_lm_rejects_says_so_in_one_line(tiny_model, tmp_path, capsys):
    folder = shutil.copytree(tiny_model("llama", shards=1), tmp_path / "model")
    path = folder / "model.safetensors"
    header, data = read_st(path)
    for i in range(39):  # tensors the studio can open but mlx-lm's llama has no place for
        header[f"model.extra.{i}.weight"] = {"dtype": "F32", "shape": [0], "data_offsets": [len(data), len(data)]}
    write_st(path, header, data)
    assert main(["chat", str(folder), "-p", "hi", "--max-tokens", "1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "39 parameters the model does not have" in err


@pytest.mark.skipif(sys.platform == "win32", reason="named pipes")
def test_eval_refuses_a_text_that_is_a_named_pipe(tiny_model, tmp_path, capsys):
    model = tiny_model("llama", shards=1)
    text = tmp_path / "text.txt"
    os.mkfifo(text)
    assert main(["eval", str(model), "--reference", str(model), "--text", str(text)]) == 2
    assert "named pipe" in capsys.readouterr().err
