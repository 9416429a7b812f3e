"""Cache and resume keys follow the code that computes what they store, not only the studio's version
(which stays 0.1.0 through every change): see studio.core.code_version for the rule."""

from __future__ import annotations

import numpy as np
import pytest

from studio.core import code_version as cv
from studio.core.calibration import calibrate
from studio.core.convert import resume
from studio.core.evaluate import logits_cache


@pytest.fixture(scope="module")
def project(tiny_model):
    from studio.core.project import Project

    return Project.open(tiny_model("llama"), "config-i")


def _keys(project) -> dict[str, str]:
    from studio.core.calibration.corpus import Corpus
    from studio.core.convert.shard_layout import plan_layout

    corpus = Corpus(np.zeros((2, 16), dtype=np.int32), "two sequences", "digest of the text and its cut")
    return {
        "resume": resume.fingerprint(project.plan, plan_layout(project.plan, 2**30), ""),
        "logits": logits_cache.cache_key("reference", np.arange(64), [(0, 64)]),
        "calibration": calibrate.cache_key(project, corpus, True, (2, 8), 64),
    }


OWNERS = {"resume": resume, "logits": logits_cache, "calibration": calibrate}


def test_each_key_changes_when_the_code_in_its_scope_changes(project, tmp_path, monkeypatch):
    probe = tmp_path / "keyprobe"
    probe.mkdir()
    (probe / "__init__.py").write_text("LEVELS = 255\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for owner in OWNERS.values():  # as if this module computed part of each stored result
        monkeypatch.setattr(owner, "CODE", owner.CODE + ("keyprobe",))
    cv.code_version.cache_clear()
    before = _keys(project)
    cv.code_version.cache_clear()
    assert _keys(project) == before  # same code, same key
    (probe / "__init__.py").write_text("LEVELS = 256\n")  # an edit, no version bump
    cv.code_version.cache_clear()
    after = _keys(project)
    cv.code_version.cache_clear()
    assert all(after[k] != before[k] for k in before), (before, after)


@pytest.mark.parametrize("key, computing", [
    ("resume", ["convert/compute.py", "model/dequantize.py", "quant_error/round_trip.py", "calibration/gptq.py"]),
    ("logits", ["evaluate/run.py", "runtime/compute_path.py", "runtime/generation.py"]),
    ("calibration", ["calibration/sensitivity.py", "calibration/layers.py", "model/unit_source.py"]),
])
def test_each_scope_holds_the_modules_that_compute_its_result(key, computing):
    files = {path.as_posix() for module in OWNERS[key].CODE for _, path in cv.source_files(module)}
    for name in computing:
        assert any(f.endswith("studio/core/" + name) for f in files), name
