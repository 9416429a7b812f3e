"""Which policy a model folder opens under in the window, and opening it.

An explicit policy wins; otherwise a studio output opens under the policy that
made it (its `configi_policy.json`), anything else under the policy used last.
A remembered policy that no longer loads must not block opening (the default
is used), and a remembered preset meant for MoE models gives way, on a dense
model, to the preset that suits it, with a note saying why.
"""

from __future__ import annotations

from pathlib import Path

from studio import settings
from studio.core.errors import StudioError
from studio.core.policy.bit_policy import OWN_POLICY_FILE, load_preset
from studio.core.project import Project
from studio.core.policy.suitability import moe_policy_on_dense, suitable_preset


def open_project(path: str, policy=None) -> tuple[Project, str, str]:
    """(project, the policy's name for the status bar, a note to show or ""); StudioError if it cannot open."""
    own = Path(path) / OWN_POLICY_FILE
    spec = policy if policy is not None else (str(own) if own.exists() else settings.get(settings.LAST_POLICY) or None)
    try:
        project = Project.open(path, spec)
    except StudioError:
        if policy is not None or not spec:
            raise
        project, spec = Project.open(path, None), None  # a stale remembered policy
    note = ""
    mismatch = moe_policy_on_dense(project.plan)
    if policy is None and not own.exists() and mismatch:
        spec = suitable_preset(project.units)
        project.set_policy(load_preset(spec))
        note = f"Opened with {spec}: {mismatch}"
    source = spec if isinstance(spec, str) and spec else project.policy.name
    return project, (Path(source).name if source.endswith(".json") else source), note
