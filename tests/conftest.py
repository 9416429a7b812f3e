"""Test-wide settings: offscreen Qt, our own settings scope, no network."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Tests must never reach a hub; mlx-lm and huggingface_hub honour these.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"


# --------------------------------------------------------------------------- model factories
# Session-scoped, so each model is written once per run. Tests must treat the
# returned folders as read-only (copy one first to modify it): they are shared.

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def m3_replica_mxfp8(tmp_path_factory):
    """Header-only MiniMax-M3 as officially released (MXFP8, 90 shards, ~444 GB on paper)."""
    from factory import write_m3_replica

    return write_m3_replica(tmp_path_factory.mktemp("m3_mxfp8"), "mxfp8")


@pytest.fixture(scope="session")
def m3_replica_bf16(tmp_path_factory):
    """Header-only MiniMax-M3 in BF16 (~5 GB shards, ~854 GB on paper)."""
    from factory import write_m3_replica

    return write_m3_replica(tmp_path_factory.mktemp("m3_bf16"), "bf16")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """tiny_model(arch, source_format="bf16", shards=2, seed=0) -> Path, built once per session."""
    from factory import make_tiny_model

    cache = {}

    def build(arch, source_format="bf16", shards=2, seed=0):
        key = (arch, source_format, shards, seed)
        if key not in cache:
            folder = tmp_path_factory.mktemp(f"{arch}-{source_format}-s{shards}-{seed}")
            cache[key] = make_tiny_model(arch, folder, source_format=source_format,
                                         seed=seed, shards=shards)
        return cache[key]

    return build


# --------------------------------------------------------------------------- a local Hub


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A Hugging Face Hub on 127.0.0.1 (tests/hub_server.py) that the real huggingface_hub client
    talks to, with its own cache and token; uploads take the plain LFS path (no xet CAS here)."""
    from huggingface_hub import constants

    from hub_server import HUB_TOKEN, HubServer

    server = HubServer(tokens=(HUB_TOKEN,), lifetime_s=300).start()
    monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)  # as HF_ENDPOINT does at import
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-token"))
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    # The same for subprocesses, which read these at import.
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "hf-token"))
    yield server
    server.stop()
