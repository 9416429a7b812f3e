"""A Hub repo as a source: opened from headers, converted by byte range, with faults on the wire.

Everything runs the real huggingface_hub client against tests/hub_server.py on 127.0.0.1.
"""

import filecmp
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hub_server import HUB_TOKEN
from studio.core import convert as convert_module
from studio.core.convert import convert
from studio.core.errors import StudioError
from studio.core.hub import ranged
from studio.core.hub.refs import hub_ref, parse_ref
from studio.core.project import Project
from studio.main import main

POLICY = "uniform-4bit"


@pytest.fixture
def tiny_repo(hub, tiny_model):
    source = tiny_model("minimax_m3_vl")
    commit = hub.add_folder("org/tiny", source)
    return source, commit


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(ranged, "BACKOFF_S", 0.01)
    monkeypatch.setattr(ranged, "PIECE_BYTES", 64 * 1024)  # split ranges, so several are in flight


def _weights_and_config(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "README.md")


def _same_files(a: Path, b: Path) -> None:
    names = _weights_and_config(a)
    assert names == _weights_and_config(b)
    for name in names:
        assert filecmp.cmp(a / name, b / name, shallow=False), name


def test_refs_tell_hub_repos_from_paths(tmp_path, monkeypatch):
    assert parse_ref("org/name@v1.0").revision == "v1.0"
    assert str(parse_ref("MiniMaxAI/MiniMax-M3")) == "MiniMaxAI/MiniMax-M3"
    assert parse_ref("a/b/c") is None and parse_ref("org/na me") is None and parse_ref("org/..") is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "model").mkdir(parents=True)
    assert hub_ref("org/model") is None  # an existing folder wins
    assert hub_ref("./org/other") is None and hub_ref("org/other") is not None


def test_open_reads_config_tokenizer_and_headers_only(tiny_repo, hub):
    source, commit = tiny_repo
    project = Project.open("org/tiny", POLICY)
    local = Project.open(source, POLICY)
    inventory = project.inventory
    assert [(t.name, t.shape, t.dtype, t.data.start) for t in inventory.tensors] == \
        [(t.name, t.shape, t.dtype, t.data.start) for t in local.inventory.tensors]
    assert project.estimate.total_bytes == local.estimate.total_bytes
    assert inventory.source.commit == commit and inventory.name == "tiny"
    assert not list(inventory.root.glob("*.safetensors"))  # weights stay on the Hub
    assert (inventory.root / "tokenizer.json").exists()
    weight_bytes = sum(p.stat().st_size for p in source.glob("*.safetensors"))
    assert hub.bytes_served < weight_bytes / 5


def test_hub_conversion_is_byte_identical_through_faults(tiny_repo, hub, fast_retries, tmp_path):
    source, commit = tiny_repo
    for kind in ("drop", "503", "429", "truncate", "drop"):
        hub.fail(kind)
    hub.latency_s = 0.02
    out_hub, out_local = tmp_path / "hub", tmp_path / "local"
    convert(Project.open("org/tiny", POLICY), out_hub)
    convert(Project.open(source, POLICY), out_local)
    _same_files(out_hub, out_local)
    assert all(f[1] == 0 for f in hub.faults)  # every fault was met and survived
    assert hub.max_in_flight > 1
    assert hub.cdn_auth == 0  # ranges followed the Hub's redirect to its CDN and sent the token only to the Hub
    card = (out_hub / "README.md").read_text()
    assert f"org/tiny@{commit}" in card and "base_model: org/tiny" in card
    assert "hf-cache" not in card and str(source) not in card


def test_every_failure_to_open_is_one_sentence(hub, tiny_model, tmp_path, capsys, monkeypatch):
    source = tiny_model("minimax_m3_vl")
    hub.add_folder("org/tiny", source)
    hub.add_folder("org/gated", source, gated=True)
    bins = tmp_path / "bins"
    bins.mkdir()
    (bins / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (bins / "pytorch_model.bin").write_bytes(b"\0" * 64)
    (bins / "model.Q4_K_M.gguf").write_bytes(b"\0" * 64)
    hub.add_folder("org/bins", bins)

    def fails(ref: str) -> str:
        assert main(["inspect", ref]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "Traceback" not in err and HUB_TOKEN not in err
        return err

    assert "neither a local folder nor a model repo" in fails("org/missing")
    assert "no revision 'v9'" in fails("org/tiny@v9")
    assert "no safetensors weights" in fails("org/bins") and "GGUF" in fails("org/bins")
    monkeypatch.delenv("HF_TOKEN")
    assert "gated" in fails("org/gated")
    from huggingface_hub import constants

    closed = "http://127.0.0.1:9"  # nothing listens on the discard port
    monkeypatch.setattr(constants, "ENDPOINT", closed)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", closed + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 1)
    assert "cannot reach the Hub" in fails("org/tiny")


def test_the_token_is_sent_but_never_written(tiny_repo, hub, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["convert", "org/tiny", str(out), "--policy", POLICY]) == 0
    assert HUB_TOKEN in hub.auth_seen
    captured = capsys.readouterr()
    assert HUB_TOKEN not in captured.out + captured.err
    for path in out.iterdir():
        assert HUB_TOKEN.encode() not in path.read_bytes(), path.name


def test_keep_source_makes_the_second_conversion_read_from_disk(tiny_repo, hub, tmp_path):
    assert main(["convert", "org/tiny", str(tmp_path / "a"), "--policy", POLICY, "--keep-source"]) == 0
    ranges = sum(1 for method, path, r in hub.log if r and ".safetensors" in path)
    project = Project.open("org/tiny", POLICY)
    assert project.inventory.source.missing_locally() == []
    convert(project, tmp_path / "b")
    after = sum(1 for method, path, r in hub.log if r and ".safetensors" in path)
    assert after == ranges  # the second open and conversion sent no range request for weights
    _same_files(tmp_path / "a", tmp_path / "b")


def test_a_network_failure_leaves_a_partial_that_resumes(tiny_repo, hub, fast_retries, monkeypatch, tmp_path):
    monkeypatch.setattr(ranged, "ATTEMPTS", 2)
    out = tmp_path / "out"
    project = Project.open("org/tiny", POLICY)
    hub.fail("503", count=10_000, match="model-00002")
    with pytest.raises(StudioError, match="kept failing"):
        convert(project, out, max_shard_bytes=50_000)
    assert not out.exists()
    record = json.loads((tmp_path / ".out.partial" / convert_module.RECORD_NAME).read_text())
    assert record["shards"]  # some output shards were finished before the failure
    hub.faults.clear()
    result = convert(Project.open("org/tiny", POLICY), out, max_shard_bytes=50_000)
    assert result.resumed_shards == len(record["shards"])
    reference = tmp_path / "reference"
    convert(Project.open(tiny_repo[0], POLICY), reference, max_shard_bytes=50_000)
    _same_files(out, reference)


_KILLED_CHILD = """
import json, sys, time
from pathlib import Path
from studio.core.convert import RECORD_NAME, convert
from studio.core.project import Project

out, marker = Path(sys.argv[1]), Path(sys.argv[2])
record = out.parent / f".{out.name}.partial" / RECORD_NAME

def stop_after_two_shards(progress):
    try:
        done = len(json.loads(record.read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return
    if done >= 2:
        marker.write_text(str(done))
        time.sleep(3600)  # wait here for the SIGKILL

convert(Project.open("org/tiny", "uniform-4bit"), out, progress=stop_after_two_shards, max_shard_bytes=50_000)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_a_killed_hub_conversion_resumes(tiny_repo, hub, tmp_path):
    out, marker = tmp_path / "out", tmp_path / "two-shards-done"
    with (tmp_path / "child.log").open("w") as log:  # the child finds the local Hub through HF_ENDPOINT
        proc = subprocess.Popen([sys.executable, "-c", _KILLED_CHILD, str(out), str(marker)],
                                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert marker.exists(), (tmp_path / "child.log").read_text()
    assert not out.exists()
    result = convert(Project.open("org/tiny", POLICY), out, max_shard_bytes=50_000)
    assert result.resumed_shards >= 2
    reference = tmp_path / "reference"
    convert(Project.open(tiny_repo[0], POLICY), reference, max_shard_bytes=50_000)
    _same_files(out, reference)
