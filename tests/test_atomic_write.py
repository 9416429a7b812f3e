"""Files replaced whole: a write that fails half-way (a full disk) leaves the old file and no debris."""

import errno
from pathlib import Path

import pytest

from studio.core.atomic_write import write_text_atomic


def _disk_fills_half_way(monkeypatch):
    real = Path.write_text

    def write_text(self, text, *args, **kwargs):
        real(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", write_text)


def test_a_failed_write_leaves_the_old_file_and_removes_its_partial_copy(tmp_path, monkeypatch):
    target = tmp_path / "config.json"
    target.write_text('{"old": true}\n')
    _disk_fills_half_way(monkeypatch)
    with pytest.raises(OSError):
        write_text_atomic(target, '{"new": true, "padding": "' + "x" * 1000 + '"}\n')
    monkeypatch.undo()
    assert target.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_a_policy_that_cannot_be_saved_says_so_in_one_sentence_and_keeps_the_users_file(tmp_path, monkeypatch):
    from studio.core.errors import StudioError
    from studio.core.policy.bit_policy import load_preset

    target = tmp_path / "mine.json"
    target.write_text("my own policy\n")
    policy = load_preset("config-i")
    _disk_fills_half_way(monkeypatch)
    with pytest.raises(StudioError, match=r"^cannot write the policy to .*mine\.json: No space left on device\.$"):
        policy.save(target)
    monkeypatch.undo()
    assert target.read_text() == "my own policy\n"
    assert [p.name for p in tmp_path.iterdir()] == ["mine.json"]


def test_a_write_replaces_the_file_whole(tmp_path):
    target = tmp_path / "record.json"
    target.write_text("old")
    write_text_atomic(target, "new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["record.json"]
