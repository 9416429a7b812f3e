"""Measured quantization error: the converter's `quant_errors.json` and the map the window shows.

A unit's figure is its relative Frobenius error ``||dequantize(quantize(W)) - W||_F / ||W||_F``,
kept as two sums (squared error, squares) while chunks stream past (over every
8th row, see convert.ERROR_ROW_STRIDE), so the figure is the same however the
unit was cut up. The file maps each
quantized unit's path to

    {"role", "layer", "bits", "group_size", "mode", "relative_error", "elements"}

`ErrorMap` holds figures by unit path and setting (bits, group size, mode),
from a survey or a loaded file, and answers "what is this unit's (or cell's)
error at the bits it has now?"; a setting nobody measured answers None.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from studio.core.errors import StudioError
from studio.core.policy.plan import Decision, Plan
from studio.core.model.unit import Unit

FILE_NAME = "quant_errors.json"
Setting = tuple[int, int, str]  # bits, group size, mode


def relative(err: float, ref: float) -> float:
    return math.sqrt(err / ref) if ref > 0 else 0.0


def entries(plan: Plan, sums: dict[str, tuple[float, float]]) -> dict[str, dict]:
    """The file's content for the units whose sums are known, in plan order."""
    out = {}
    for unit, decision in plan.rows():
        if decision.action != "quantize" or unit.path not in sums:
            continue
        err, ref = sums[unit.path]
        out[unit.path] = {"role": unit.role, "layer": unit.layer, "bits": decision.bits,
                          "group_size": decision.group_size, "mode": decision.mode,
                          "relative_error": relative(err, ref), "elements": unit.elements}
    return out


def write(folder: Path, plan: Plan, sums: dict[str, tuple[float, float]]) -> Path:
    path = Path(folder) / FILE_NAME
    path.write_text(json.dumps(entries(plan, sums), indent=1) + "\n")
    return path


def load(path: str | Path) -> dict[str, dict]:
    """Read a quant_errors.json (or the folder holding one); one sentence if it is not one."""
    path = Path(path)
    if path.is_dir():
        path = path / FILE_NAME
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise StudioError(f"cannot read {path}: {exc.strerror or exc}.") from None
    except ValueError:
        raise StudioError(f"{path} is not JSON.") from None
    needed = {"bits", "group_size", "mode", "relative_error", "elements"}
    if not isinstance(data, dict) or not all(isinstance(v, dict) and needed <= set(v) for v in data.values()):
        raise StudioError(f"{path} is not a quant_errors.json: every entry needs {', '.join(sorted(needed))}.")
    return data


def layer_profile(data: dict[str, dict]) -> dict[str, dict[int, float]]:
    """Relative error by role family and layer, from a quant_errors.json's entries: for each
    family (in `roles.FAMILIES` order) and layer, the element-weighted RMS of its units' figures,
    as `ErrorMap.cell_error` combines them. Units outside the layers are left out."""
    from studio.core.model.roles import FAMILIES, ROLE_BY_KEY

    sums: dict[str, dict[int, list[float]]] = {}
    for e in data.values():
        layer = e.get("layer")
        if layer is None:
            continue
        role = ROLE_BY_KEY.get(e.get("role"))
        family = role.family if role is not None else "other"
        acc = sums.setdefault(family, {}).setdefault(int(layer), [0.0, 0.0])
        acc[0] += e["elements"] * float(e["relative_error"]) ** 2
        acc[1] += e["elements"]
    return {family: {layer: math.sqrt(num / den) for layer, (num, den) in sorted(sums[family].items()) if den}
            for family in FAMILIES if family in sums}


class ErrorMap:
    """Relative errors by unit path and setting; `source` says where they came from."""

    def __init__(self, source: str):
        self.source = source
        self.units: dict[str, dict[Setting, float]] = {}

    def add(self, path: str, setting: Setting, error: float) -> None:
        self.units.setdefault(path, {})[setting] = error

    @classmethod
    def from_entries(cls, data: dict[str, dict], source: str) -> "ErrorMap":
        errors = cls(source)
        for path, e in data.items():
            errors.add(path, (int(e["bits"]), int(e["group_size"]), str(e["mode"])), float(e["relative_error"]))
        return errors

    def __len__(self) -> int:
        return len(self.units)

    def unit_error(self, unit: Unit, decision: Decision) -> float | None:
        if decision.action != "quantize":
            return None
        return self.units.get(unit.path, {}).get((decision.bits, decision.group_size, decision.mode))

    def cell_error(self, rows) -> float | None:
        """Element-weighted RMS of the measured units among (unit, decision) `rows`."""
        num = den = 0.0
        for unit, decision in rows:
            e = self.unit_error(unit, decision)
            if e is not None:
                num += unit.elements * e * e
                den += unit.elements
        return math.sqrt(num / den) if den else None
