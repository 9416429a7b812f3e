"""The layers x roles grid: which cell (role column, layer row) each unit is in.

One owner for this mapping, `cell_of`: the plan decides each unit by its cell,
the painting code (`grid_paint`) turns painted cells into rules, and the window's
grid, tree and selection all find a unit's cell here.

A unit's row is its own layer. Units outside the decoder stack (embeddings,
lm_head, final norm, vision) share the row `None`, which a policy selects with
`"none"`. Multi-token-prediction layers (layer >= num_hidden_layers, as DeepSeek-V3
and MiniMax checkpoints carry them) keep rows of their own after the stack:
policy layer selectors match them by number (`all`, `list`, `range`), never as
`"none"`, so folding them into the `None` row would paint rules that miss them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from studio.core.model.roles import ROLES
from studio.core.model.unit import Unit

Cell = tuple[str, "int | None"]


def cell_of(unit: Unit) -> Cell:
    """The grid cell of one unit: (its role, its layer or None)."""
    return unit.role, unit.layer


@dataclass(frozen=True)
class Grid:
    """The grid of one model: its rows and columns, and the units in each cell.

    `layers` are the rows: None (outside the layers), 0..num_layers-1, then any
    layers past the stack (multi-token prediction). `roles` are the columns, the
    roles present in ROLES order. `cells` maps a cell to its units' indices.
    """

    num_layers: int
    layers: tuple[int | None, ...]
    roles: tuple[str, ...] = ()
    cells: dict[Cell, tuple[int, ...]] = field(default_factory=dict)

    @property
    def extra_layers(self) -> tuple[int, ...]:
        """Rows past the decoder stack (multi-token prediction layers)."""
        return tuple(layer for layer in self.layers if layer is not None and layer >= self.num_layers)

    def row_name(self, layer: int | None) -> str:
        """A row as people read it: "outside the layers", "layer 3", "layer 61 (multi-token prediction)"."""
        if layer is None:
            return "outside the layers"
        return f"layer {layer}" + (" (multi-token prediction)" if layer >= self.num_layers else "")


def grid_of(units: list[Unit], num_layers: int) -> Grid:
    cells: dict[Cell, list[int]] = {}
    for index, unit in enumerate(units):
        cells.setdefault(cell_of(unit), []).append(index)
    extra = sorted({layer for _, layer in cells if layer is not None and layer >= num_layers})
    present = {role for role, _ in cells}
    return Grid(num_layers, (None, *range(num_layers), *extra), tuple(r.key for r in ROLES if r.key in present),
                {cell: tuple(members) for cell, members in cells.items()})


def stack_grid(num_layers: int, extra_layers: tuple[int, ...] = ()) -> Grid:
    """The rows of a model with `num_layers` layers (plus `extra_layers`), for painting without units."""
    return Grid(num_layers, (None, *range(num_layers), *extra_layers))
