"""A conversion killed with SIGKILL leaves nothing that looks finished, and a rerun resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studio.core.convert import RECORD_NAME


def _completed_shards(partial: Path) -> int:
    try:
        return len(json.loads((partial / RECORD_NAME).read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_then_resume(tiny_model, tmp_path):
    source = tiny_model("minimax_m3_vl")
    out = tmp_path / "out"
    partial = tmp_path / ".out.partial"
    # Tiny shards, so the kill lands between shards of one run.
    command = [sys.executable, "-m", "studio", "convert", str(source), str(out), "--policy", "uniform-4bit",
               "--shard-gb", "0.00005"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 60
    while _completed_shards(partial) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    if proc.poll() is not None:
        pytest.skip("the conversion finished before it could be killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    assert not out.exists()  # nothing that looks finished
    assert partial.is_dir() and not (partial / "config.json").exists()
    done_before = _completed_shards(partial)
    assert done_before >= 2

    rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert "resum" in (rerun.stderr + rerun.stdout).lower()
    assert (out / "config.json").exists() and not partial.exists()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > done_before and all((out / s).exists() for s in shards)
