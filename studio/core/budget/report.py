"""Fit to a budget, end to end: the byte target, the proposal, and its diff as rows a person reads.

Shared by `configi-studio fit` and the window's "Fit to budget…" dialog. The
changes of a proposal are grouped by (role, old bits, new bits) so MiniMax-M3's
hundreds of changed cells read as a dozen lines ("Expert gate, layers 3-20,
2 -> 3").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from studio.core.budget.propose import BudgetProposal, affine_cells, propose
from studio.core.quant_error.survey import Survey
from studio.core.errors import StudioError
from studio.core.memory import weights_budget_bytes
from studio.core.project import Project
from studio.core.model.roles import ROLE_BY_KEY


def target_bytes(project: Project, target_gb: float | None = None, mac_gb: int | None = None,
                 context: int = 32768) -> int:
    """The weights budget: an explicit size in GB (1e9 bytes), or what a Mac leaves for weights."""
    if target_gb is not None:
        if not math.isfinite(target_gb) or target_gb <= 0:
            raise StudioError("the target size must be a number of GB above 0.")
        return int(round(target_gb * 1e9))  # round: 0.004123456 GB is 4,123,456 bytes, not one less
    if mac_gb is None:
        raise StudioError("give a target size in GB or a Mac's memory.")
    budget = weights_budget_bytes(project.inventory.text_config, mac_gb, context)
    if budget <= 0:
        raise StudioError(f"a {mac_gb} GB Mac has no room for weights at {context:,} tokens of context.")
    return budget


@dataclass(frozen=True)
class ChangeRow:
    role: str
    layers: tuple[int | None, ...]
    old_bits: int
    new_bits: int
    bytes_before: int
    bytes_after: int
    error_before: float  # relative error (RMS over the rows' elements)
    error_after: float

    @property
    def role_label(self) -> str:
        return ROLE_BY_KEY[self.role].label if self.role in ROLE_BY_KEY else self.role

    @property
    def layers_text(self) -> str:
        return layers_text(self.layers)

    def to_dict(self) -> dict:
        return {"role": self.role, "layers": list(self.layers), "old_bits": self.old_bits,
                "new_bits": self.new_bits, "bytes_before": self.bytes_before, "bytes_after": self.bytes_after,
                "error_before": self.error_before, "error_after": self.error_after}


def error_text(value: float, additive: bool = False) -> str:
    """A fit's error as people read it: a relative error in percent, or a summed sensitivity (the
    predicted KL of the next-token distribution, in nats) to three significant digits."""
    return f"{value:.3g} nats" if additive else f"{100 * value:.2f}%"


def layers_text(layers) -> str:
    """(None, 0, 1, 2, 5) -> "outside, 0-2, 5"."""
    parts = ["outside"] if None in layers else []
    numbers = sorted(l for l in layers if l is not None)
    start = prev = None
    for n in numbers + [None]:
        if n is not None and prev is not None and n == prev + 1:
            prev = n
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = n
    return ", ".join(parts)


def _elements(project: Project) -> dict:
    cells = affine_cells(project)
    return {cell: sum(project.units[i].elements for i in members) for cell, members in cells.items()}


def change_rows(project: Project, proposal: BudgetProposal, additive: bool = False) -> list[ChangeRow]:
    """The proposal's changed cells, grouped by role and old -> new bits, in role then layer order.
    A row's cost is its cells' sum when costs add (`additive`: output-space sensitivity), else the
    element-weighted RMS of their mean squared relative errors (the survey's weight error)."""
    elements = _elements(project)
    groups: dict[tuple, list] = {}
    for c in proposal.changes:
        groups.setdefault((c.role, c.old_bits, c.new_bits), []).append(c)
    rows = []
    for (role, old, new), changes in groups.items():
        weight = sum(elements.get((c.role, c.layer), 0) for c in changes) or 1

        def combined(attr, changes=changes, weight=weight):
            if additive:
                return sum(getattr(c, attr) for c in changes)
            return math.sqrt(sum(elements.get((c.role, c.layer), 0) * getattr(c, attr) for c in changes) / weight)

        rows.append(ChangeRow(role, tuple(c.layer for c in changes), old, new,
                              sum(c.old_bytes for c in changes), sum(c.new_bytes for c in changes),
                              combined("old_error"), combined("new_error")))
    return rows


def overall_error(project: Project, cell_errors: dict, policy=None, additive: bool = False) -> float:
    """The cost of `policy` (default: current) over the affine quantized cells: the sum of the cells'
    costs when they add (`additive`), else the element-weighted RMS relative error."""
    elements = _elements(project)
    num = den = 0.0
    num_layers = project.num_layers
    for cell, n in elements.items():
        action = (policy or project.policy).decide(cell[0], cell[1], num_layers)[0]
        bits = getattr(action, "bits", None)
        if bits in cell_errors.get(cell, {}):
            num += cell_errors[cell][bits] if additive else n * cell_errors[cell][bits]
            den += n
    if additive:
        return num
    return math.sqrt(num / den) if den else 0.0


@dataclass
class BudgetFit:
    proposal: BudgetProposal
    rows: list[ChangeRow]
    bytes_before: int
    error_before: float
    error_after: float
    additive: bool = False  # the errors are sums of cell costs, not an RMS relative error

    def to_dict(self) -> dict:
        p = self.proposal
        return {"target_bytes": p.target_bytes, "bytes_before": self.bytes_before, "bytes_after": p.total_bytes,
                "fits": p.total_bytes <= p.target_bytes, "error_before": self.error_before,
                "error_after": self.error_after, "error_combined": "sum" if self.additive else "rms",
                "policy": p.policy.to_dict(),
                "changes": [r.to_dict() for r in self.rows]}


def fit_to_budget(project: Project, budget: int, cell_errors: dict, *, additive: bool = False,
                  note: str = "fit to budget") -> BudgetFit:
    """Propose a policy within `budget` bytes from per-cell costs and describe the change.

    `cell_errors` is a `Survey` of this project (weight error; one measured on another model or
    another policy's group sizes is refused, in one sentence) or, with `additive`, output-space
    sensitivities (`CalibrationStats.sensitivity`, which add across cells); one solver either way."""
    if isinstance(cell_errors, Survey):
        cell_errors.check(project)
    proposal = propose(project, budget, cell_errors, note=note)
    return BudgetFit(proposal, change_rows(project, proposal, additive), project.estimate.total_bytes,
                     overall_error(project, cell_errors, additive=additive),
                     overall_error(project, cell_errors, proposal.policy, additive), additive)
