"""Every malformed input of the corpus, against every command, in-process: exit status 2, one
sentence of at most two lines, no traceback, within 10 s, and nothing touched."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from corpus import ALL_COMMANDS, bases, build, cases, snapshot  # noqa: F401 (bases: a fixture)

from studio.main import main

CASES = cases()
TIME_LIMIT_S = 10.0


def argv(command: str, model, policy, out) -> list[str]:
    pol = ["--policy", str(policy)] if policy else []
    m = str(model)
    return {
        "inspect": ["inspect", m],
        "estimate": ["estimate", m, *pol],
        "convert": ["convert", m, str(out / "mlx"), *pol],
        "fit": ["fit", m, "--target-gb", "1", *pol],
        "chat": ["chat", m, "-p", "hi", "--max-tokens", "1"],
        "eval": ["eval", m, "--reference", m],
        "window": [m, "--screenshot", str(out / "shot.png"), *pol],
    }[command]


def assert_refused(command: str, rc: int, err: str, seconds: float) -> None:
    where = f"{command}: rc={rc}, {seconds:.1f} s, stderr={err[-600:]!r}"
    assert rc == 2, where
    assert "Traceback" not in err, where
    assert err.count("configi-studio: error:") == 1, where
    message = err.split("configi-studio: error:", 1)[1].strip()
    assert message and len(message.splitlines()) <= 2 and len(message) <= 400, where
    assert seconds < TIME_LIMIT_S, where


def test_the_corpus_is_big_and_covers_every_category():
    by_category = Counter(case.category for case in CASES)
    assert len(CASES) >= 100 and len({case.id for case in CASES}) == len(CASES)
    assert set(by_category) == {"types", "json", "files", "numbers", "inconsistent", "paths", "policy", "output"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_refused_cleanly_by_every_command(case, bases, tmp_path, capsys, qapp):
    model, policy = build(case, bases, tmp_path)
    outs = tmp_path / "outs"
    outs.mkdir()
    before = snapshot(model, policy)
    for command in ALL_COMMANDS:
        if command not in case.refused_by:
            continue
        out = outs / command
        out.mkdir()
        started = time.monotonic()
        rc = main(argv(command, model, policy, out))
        seconds = time.monotonic() - started
        assert_refused(command, rc, capsys.readouterr().err, seconds)
        assert list(out.iterdir()) == [], f"{command} left {list(out.iterdir())}"
    assert snapshot(model, policy) == before, "an input was modified"
