"""Which policy a model folder opens under in the window, and opening it.

An explicit policy wins (one given on the command line, or the open model's
policy when the user chose to carry it over); otherwise a studio output opens
under the policy that made it (its `configi_policy.json`) and anything else
clean, under Config-I, which on a dense model gives way to the preset that
suits it, with a note saying why. Nothing of the previous model's policy leaks
into the next unless asked for.
"""

from __future__ import annotations

from pathlib import Path

from studio.core.policy.bit_policy import DEFAULT_PRESET, OWN_POLICY_FILE, load_preset
from studio.core.project import Project
from studio.core.policy.suitability import moe_policy_on_dense, suitable_preset


def open_project(path: str, policy=None) -> tuple[Project, str, str]:
    """(project, the policy's name for the status bar, a note to show or ""); StudioError if it cannot open."""
    own = Path(path) / OWN_POLICY_FILE
    spec = policy if policy is not None else (str(own) if own.exists() else None)
    project = Project.open(path, spec)
    note = ""
    mismatch = moe_policy_on_dense(project.plan)
    if policy is None and not own.exists() and mismatch:
        spec = suitable_preset(project.units)
        project.set_policy(load_preset(spec))
        note = f"Opened with {spec}: {mismatch}"
    if spec is None:
        spec = DEFAULT_PRESET  # what Project.open chose: named by its key, as the Preset box lists it
    source = spec if isinstance(spec, str) else project.policy.name
    return project, (Path(source).name if source.endswith(".json") else source), note
