"""A conversion killed with SIGKILL leaves nothing that looks finished, and a rerun resumes.

The kill is deterministic: the child converts with a progress callback that, once
two shards are recorded complete, says so through a marker file and then stops
(sleeps), so the parent's SIGKILL always lands mid-conversion, never after it ends.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studio.core.convert import RECORD_NAME

SHARD_GB = "0.00005"  # tiny shards, so the kill lands between shards of one run

_CHILD = """
import json, sys, time
from pathlib import Path
from studio.core.convert import RECORD_NAME, convert
from studio.core.project import Project

source, out, marker = sys.argv[1:4]
partial = Path(out).parent / f".{Path(out).name}.partial"

def stop_after_two_shards(progress):
    try:
        done = len(json.loads((partial / RECORD_NAME).read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return
    if done >= 2:
        Path(marker).write_text(str(done))
        time.sleep(3600)  # wait here for the SIGKILL

convert(Project.open(source, "uniform-4bit"), out, progress=stop_after_two_shards,
        max_shard_bytes=int(float(sys.argv[4]) * 1e9))
"""


def _completed_shards(partial: Path) -> int:
    return len(json.loads((partial / RECORD_NAME).read_text())["shards"])


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_then_resume(tiny_model, tmp_path):
    source = tiny_model("minimax_m3_vl")
    out = tmp_path / "out"
    partial = tmp_path / ".out.partial"
    marker = tmp_path / "two-shards-done"
    with (tmp_path / "child.log").open("w") as log:
        proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(source), str(out), str(marker), SHARD_GB],
                                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if not marker.exists():
            proc.kill()
            proc.wait()
        assert marker.exists(), f"the child never reached two complete shards: {(tmp_path / 'child.log').read_text()}"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL

    assert not out.exists()  # nothing that looks finished
    assert partial.is_dir() and not (partial / "config.json").exists()
    done_before = _completed_shards(partial)
    assert done_before >= 2

    command = [sys.executable, "-m", "studio", "convert", str(source), str(out), "--policy", "uniform-4bit",
               "--shard-gb", SHARD_GB]
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert rerun.returncode == 0, rerun.stderr
    assert "resum" in (rerun.stderr + rerun.stdout).lower()
    assert (out / "config.json").exists() and not partial.exists()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > done_before and all((out / s).exists() for s in shards)
