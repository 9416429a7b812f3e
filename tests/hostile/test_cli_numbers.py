"""Numbers on the command line that make no sense (NaN, infinity, zero, negative) are refused in one
sentence before any work, never a traceback or a silent nonsense run."""

from __future__ import annotations

import pytest

from studio.main import main

CASES = [
    (["fit", "{model}", "--target-gb", "nan"], "the target size must be a number of GB above 0."),
    (["fit", "{model}", "--target-gb", "inf"], "the target size must be a number of GB above 0."),
    (["fit", "{model}", "--target-gb", "1e400"], "the target size must be a number of GB above 0."),
    (["fit", "{model}", "--mac", "64", "--context", "0"], "--context must be at least 1 token, not 0."),
    (["fit", "{model}", "--target-gb", "1", "--sample", "0"], "--sample must be at least 1 value, not 0."),
    (["estimate", "{model}", "--context", "-1"], "--context must be at least 1 token, not -1."),
    (["convert", "{model}", "{out}", "--shard-gb", "nan"], "--shard-gb must be a number of GB above 0."),
    (["convert", "{model}", "{out}", "--shard-gb", "0"], "--shard-gb must be a number of GB above 0."),
    (["chat", "{model}", "-p", "hi", "--temp", "nan"], "--temp must be a number, 0 or more."),
    (["chat", "{model}", "-p", "hi", "--repetition-penalty", "-1"],
     "--repetition-penalty must be a number above 0 (1.0 is off)."),
]


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(a[:1] + a[2:]) for a, _ in CASES])
def test_a_number_that_makes_no_sense_is_refused_in_one_sentence(argv, message, tiny_model, tmp_path, capsys):
    model, out = tiny_model("llama"), tmp_path / "out"
    assert main([a.format(model=model, out=out) for a in argv]) != 0
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"configi-studio: error: {message}"
    assert "Traceback" not in err and not out.exists()
