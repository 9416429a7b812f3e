"""Publishing a converted folder with the real huggingface_hub client (plain LFS, multipart for big
files) to tests/hub_server.py: it creates the repo, resumes, and refuses what is not a finished output."""

import shutil

import pytest

from hub_server import HUB_TOKEN
from studio.core.cancel import CancelToken
from studio.core.convert import MARKER_NAME, convert
from studio.core.errors import StudioError
from studio.core.hub.publish import PublishCancelled, check_output, publish
from studio.core.project import Project
from studio.main import main


@pytest.fixture(scope="module")
def converted(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("publish") / "tiny-4bit"
    convert(Project.open(tiny_model("minimax_m3_vl"), "uniform-4bit"), out, max_shard_bytes=400_000)
    return out


def _lfs_puts(hub) -> int:
    return sum(1 for method, path, _ in hub.log if method == "PUT")


def test_publish_creates_the_repo_and_the_hub_serves_the_folder(converted, hub, capsys):
    hub.multipart_above, hub.part_size = 256 * 1024, 128 * 1024  # the shards go up in parts
    assert main(["publish", str(converted), "me/tiny-4bit", "--private"]) == 0
    assert "published" in capsys.readouterr().out
    assert hub.repos["me/tiny-4bit"].private
    served = hub.files("me/tiny-4bit")
    assert sorted(served) == sorted(p.name for p in converted.iterdir())
    for name, path in served.items():
        assert path.read_bytes() == (converted / name).read_bytes(), name
    # and it opens from the Hub under the policy it was made with
    project = Project.open("me/tiny-4bit")
    assert project.policy.name == "Uniform 4-bit"
    assert project.inventory.source_format == "mlx"


def test_a_cancelled_publish_resumes_without_sending_files_twice(converted, hub):
    hub.log.clear()
    cancel = CancelToken()
    seen = []

    def progress(name, done, total):
        seen.append(name)
        if seen.count(name) == 1 and name.endswith(".safetensors") and len({n for n in seen if n}) == 2:
            cancel.cancel()  # after the first shard went up

    with pytest.raises(PublishCancelled):
        publish(converted, "me/resumed", progress=progress, cancel=cancel)
    first = _lfs_puts(hub)
    assert first >= 1 and "me/resumed" in hub.repos and not hub.files("me/resumed")  # nothing committed yet
    hub.log.clear()
    result = publish(converted, "me/resumed")
    shards = sorted(p.name for p in converted.glob("*.safetensors"))
    assert _lfs_puts(hub) == len(shards) - 1  # the first shard was not sent again
    assert sorted(hub.files("me/resumed")) == sorted(p.name for p in converted.iterdir())
    assert result.commit == hub.repos["me/resumed"].refs["main"]


def test_publish_refuses_what_is_not_a_finished_output(converted, tiny_model, hub, tmp_path, capsys):
    source = tiny_model("minimax_m3_vl")
    with pytest.raises(StudioError, match="not a Config-I Studio output"):
        check_output(source)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(converted, unfinished)
    (unfinished / MARKER_NAME).write_text("x")
    with pytest.raises(StudioError, match="unfinished conversion"):
        check_output(unfinished)
    truncated = tmp_path / "truncated"
    shutil.copytree(converted, truncated)
    shard = sorted(truncated.glob("*.safetensors"))[-1]
    shard.write_bytes(shard.read_bytes()[:-100])
    assert main(["publish", str(truncated), "me/bad"]) == 2
    err = capsys.readouterr().err
    assert "truncated" in err and "\n" not in err.strip() and HUB_TOKEN not in err
    assert "me/bad" not in hub.repos


def test_publish_without_a_token_says_how_to_log_in(converted, hub, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN")
    assert main(["publish", str(converted), "me/anon"]) == 2
    assert "hf auth login" in capsys.readouterr().err
