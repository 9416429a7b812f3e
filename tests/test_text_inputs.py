"""Calibration and evaluation texts go through one reader: a pipe, a folder, non-UTF-8 or an
empty file is one sentence, never a hang or a traceback."""

import os

import pytest

from studio.core.calibration.corpus import read_corpus_text
from studio.core.errors import StudioError
from studio.core.evaluate.inputs import read_text


def _readers():
    return [lambda p: read_corpus_text(p), lambda p: read_text(p)]


@pytest.mark.parametrize("reader", _readers(), ids=["calibration", "evaluation"])
def test_a_good_text_is_read_with_its_label(tmp_path, reader):
    path = tmp_path / "t.txt"
    path.write_text("Some words to read.\n", encoding="utf-8")
    text, label = reader(path)
    assert text == "Some words to read.\n" and label == str(path)


@pytest.mark.parametrize("reader", _readers(), ids=["calibration", "evaluation"])
@pytest.mark.parametrize("kind, expected", [
    ("folder", "a folder, not a regular file"),
    ("binary", "not UTF-8"),
    ("blank", "empty"),
    ("missing", "does not exist"),
])
def test_a_bad_text_is_one_sentence(tmp_path, reader, kind, expected):
    path = tmp_path / "t.txt"
    if kind == "folder":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(b"\xff\xfe\x00bad")
    elif kind == "blank":
        path.write_text("  \n")
    with pytest.raises(StudioError, match=expected):
        reader(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
@pytest.mark.parametrize("reader", _readers(), ids=["calibration", "evaluation"])
def test_a_named_pipe_is_refused_without_blocking(tmp_path, reader):
    path = tmp_path / "pipe.txt"
    os.mkfifo(path)
    with pytest.raises(StudioError, match="named pipe"):
        reader(path)
