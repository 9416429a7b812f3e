"""Base models for the hostile-input corpus: tiny real models, built once per session."""

import pytest


@pytest.fixture(scope="session")
def bases(tiny_model, tmp_path_factory):
    """name -> read-only folder: llama (1 and 2 shards), an MoE, a DeepSeek-V3 FP8, an MLX 4-bit."""
    from studio.core.convert import convert
    from studio.core.project import Project

    mlx = tmp_path_factory.mktemp("hostile-base") / "mlx"
    convert(Project.open(tiny_model("llama", shards=1), "uniform-4bit"), mlx, measure_errors=False)
    return {
        "llama1": tiny_model("llama", shards=1),
        "llama2": tiny_model("llama", shards=2),
        "moe": tiny_model("qwen3_moe", shards=1),
        "fp8": tiny_model("deepseek_v3", "fp8", shards=1),
        "mlx": mlx,
    }
