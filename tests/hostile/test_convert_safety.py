"""Concurrent runs, a corrupted finished shard, kills around --force and finishing, a refused start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from studio.core.convert import RECORD_NAME, CancelToken, ConversionCancelled, convert, finish
from studio.core.convert.lock import DestinationLock
from studio.core.errors import StudioError
from studio.core.project import Project
from studio.main import main

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
SMALL_SHARDS = 200_000
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and named pipes are POSIX")


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def _weights(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("model*.safetensors"))}


@pytest.fixture(scope="module")
def source(tiny_model):
    return tiny_model("qwen3_moe")


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory):
    """The same conversion, undisturbed."""
    out = tmp_path_factory.mktemp("reference") / "mlx"
    convert(Project.open(source, "uniform-4bit"), out, max_shard_bytes=SMALL_SHARDS)
    return out


def _convert_argv(source, out, *extra):
    return ["convert", str(source), str(out), "--policy", "uniform-4bit", "--shard-gb", str(SMALL_SHARDS / 1e9), *extra]


def test_a_second_conversion_into_the_same_destination_is_refused(source, reference, tmp_path, capsys):
    out = tmp_path / "out"
    with DestinationLock(tmp_path / ".out.lock", tmp_path / ".out.partial"):  # another run holds it
        assert main(_convert_argv(source, out)) == 2
        assert "another conversion" in capsys.readouterr().err
        assert not out.exists() and not (tmp_path / ".out.partial").exists()
    assert main(_convert_argv(source, out)) == 0
    assert _weights(out) == _weights(reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no lock, no partial left


@posix_only
def test_the_lock_holds_across_processes_and_dies_with_its_holder(source, reference, tmp_path, capsys):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from studio.core.convert.lock import DestinationLock
        DestinationLock({str(tmp_path / '.out.lock')!r}, {str(tmp_path / '.out.partial')!r}).acquire()
        print("locked", flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(_convert_argv(source, out)) == 2
        err = capsys.readouterr().err
        assert f"another conversion (process {holder.pid})" in err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    assert main(_convert_argv(source, out)) == 0  # the kernel dropped the dead holder's lock
    assert _weights(out) == _weights(reference)


def test_a_corrupted_finished_shard_is_redone_on_resume(source, reference, tmp_path):
    out = tmp_path / "out"
    partial = tmp_path / ".out.partial"
    token = CancelToken()

    def cancel_after_two_shards(progress):
        record = partial / RECORD_NAME
        if record.exists() and len(json.loads(record.read_text())["shards"]) >= 2:
            token.cancel()

    project = Project.open(source, "uniform-4bit")
    with pytest.raises(ConversionCancelled):
        convert(project, out, progress=cancel_after_two_shards, cancel=token, max_shard_bytes=SMALL_SHARDS)
    done = json.loads((partial / RECORD_NAME).read_text())["shards"]
    victim = partial / sorted(done)[0]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF  # same size, header intact: only the checksum can tell
    victim.write_bytes(bytes(data))

    result = convert(project, out, max_shard_bytes=SMALL_SHARDS)
    assert result.resumed_shards == len(done) - 1
    assert _weights(out) == _weights(reference)


def test_a_damaged_resume_record_means_starting_over(source, reference, tmp_path):
    out = tmp_path / "out"
    partial = tmp_path / ".out.partial"
    partial.mkdir()
    (partial / RECORD_NAME).write_text("[" * 100_000)
    result = convert(Project.open(source, "uniform-4bit"), out, max_shard_bytes=SMALL_SHARDS)
    assert result.resumed_shards == 0 and _weights(out) == _weights(reference)


def _killed(point: str, argv: list[str]) -> None:
    proc = subprocess.run([sys.executable, str(HERE / "killer.py"), point, *argv], capture_output=True, text=True,
                          env=_env(), timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def _old_model(source, out) -> dict[str, bytes]:
    convert(Project.open(source, "uniform-8bit"), out, max_shard_bytes=SMALL_SHARDS)
    return _weights(out)


@posix_only
def test_a_kill_between_the_force_renames_is_finished_by_the_next_force_run(source, reference, tmp_path, capsys):
    out, old = tmp_path / "out", tmp_path / ".out.old"
    _old_model(source, out)
    _killed("rename1", _convert_argv(source, out, "--force"))
    assert not out.exists() and old.is_dir() and (tmp_path / ".out.partial" / "config.json").exists()

    assert main(_convert_argv(source, out, "--force")) == 0
    captured = capsys.readouterr()
    assert "stopped while replacing" in captured.err and "resumed" in captured.out
    assert _weights(out) == _weights(reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@posix_only
def test_a_kill_between_the_force_renames_without_force_puts_the_old_model_back(source, tmp_path, capsys):
    out, old = tmp_path / "out", tmp_path / ".out.old"
    before = _old_model(source, out)
    _killed("rename1", _convert_argv(source, out, "--force"))
    assert main(_convert_argv(source, out)) == 2
    err = capsys.readouterr().err
    assert "already exists" in err
    assert out.is_dir() and not old.exists() and _weights(out) == before


@posix_only
def test_a_kill_after_the_second_rename_leaves_a_finished_model_and_the_old_one_is_removed(source, reference,
                                                                                            tmp_path, capsys):
    out, old = tmp_path / "out", tmp_path / ".out.old"
    _old_model(source, out)
    _killed("rename2", _convert_argv(source, out, "--force"))
    assert _weights(out) == _weights(reference) and old.is_dir()
    assert main(_convert_argv(source, out, "--force")) == 0
    assert "removed" in capsys.readouterr().err and not old.exists()
    assert _weights(out) == _weights(reference)


@posix_only
def test_a_kill_while_finishing_resumes_without_recomputing(source, reference, tmp_path, capsys):
    out = tmp_path / "out"
    _killed("finishing", _convert_argv(source, out))
    partial = tmp_path / ".out.partial"
    assert not out.exists() and (partial / RECORD_NAME).exists() and not (partial / "config.json").exists()
    shards = len(json.loads((partial / RECORD_NAME).read_text())["shards"])

    assert main(_convert_argv(source, out)) == 0
    assert f"{shards} shard(s) resumed" in capsys.readouterr().out
    assert _weights(out) == _weights(reference) and not (out / RECORD_NAME).exists()


def test_a_refusal_at_the_disk_check_removes_what_the_run_created(source, tmp_path, monkeypatch):
    real = finish.shutil.disk_usage
    monkeypatch.setattr(finish.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    out = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(StudioError, match="not enough free disk space"):
        convert(Project.open(source, "uniform-4bit"), out)
    assert list(tmp_path.iterdir()) == []


def test_the_output_carries_no_code_and_no_auto_map(source, tmp_path):
    import shutil

    src = shutil.copytree(source, tmp_path / "src")
    config = json.loads((src / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_x.Model"}
    (src / "config.json").write_text(json.dumps(config))
    (src / "modeling_x.py").write_text("raise SystemExit('ran')\n")
    out = tmp_path / "out"
    convert(Project.open(src, "uniform-4bit"), out)
    assert not list(out.glob("*.py"))
    assert "auto_map" not in json.loads((out / "config.json").read_text())
