"""The policy grid: layers (rows: outside the layers, the stack, then any MTP layers) by roles (columns).

Which cell each unit is in is the core's (`studio.core.policy.grid`); this model only shows it.

`PolicyGridModel` is a thin table over the controller's policy: a cell shows
what the policy decides for that role in that layer, coloured by bits, or with
`show_error` on, the measured relative error at the bits it has now (from the
controller's ErrorMap), coloured by error; cells nobody measured show "–". With
`sensitivity` set (the calibration pass's per-cell output-space error by bits)
the same heat map shows that instead: how much the layer's output moves when
this cell alone is quantized to its current bits. While a
stroke is painted the model overlays the stroke (`preview`); the view turns a
whole stroke into one undo command and one dataChanged for its rectangle
(the view is views/grid_view.py).
"""

from __future__ import annotations

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt
from PySide6.QtGui import QColor, QFont

from studio.core.formatting import human_bytes
from studio.core.policy.plan import decide
from studio.core.policy.bit_policy import Quantize
from studio.core.model.roles import ROLE_BY_KEY
from studio.views import item_roles
from studio.views.palette import (TYPICAL_ERROR, action_colour, action_short, error_colour, error_text,
                                  text_on)

UNQUANTIZED_SHADE = QColor(128, 128, 128, 56)  # heat map: kept and dropped cells, on light and dark themes

SHORT = {
    "embedding": "Emb", "lm_head": "Head", "attn_q": "Q", "attn_k": "K", "attn_v": "V", "attn_o": "O",
    "attn_qkv": "QKV", "attn_q_a": "Q-a", "attn_q_b": "Q-b", "attn_kv_a": "KV-a", "attn_kv_b": "KV-b",
    "expert_gate": "E\ngate", "expert_up": "E\nup", "expert_gate_up": "E\ng+u", "expert_down": "E\ndown",
    "shared_gate": "S\ngate", "shared_up": "S\nup", "shared_down": "S\ndown", "mlp_gate": "M\ngate",
    "mlp_up": "M\nup", "mlp_down": "M\ndown", "router": "Rtr", "router_bias": "R\nbias", "indexer": "Idx",
    "norm": "Norm", "vision": "Vis", "mtp": "MTP", "other": "Other",
}


class PolicyGridModel(QAbstractTableModel):
    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.roles: list[str] = []
        self.layers: list[int | None] = []
        self.cells: dict[tuple[str, int | None], tuple[int, ...]] = {}
        self.preview: dict[tuple[str, int | None], object] = {}
        self.show_error = False
        self.sensitivity: dict | None = None  # {(role, layer): {bits: relative output error}} while shown
        self._bold = QFont()
        self._bold.setBold(True)

    def set_project(self, project) -> None:
        self.beginResetModel()
        self.preview = {}
        self.cells = {}
        if project is None:
            self.roles, self.layers = [], []
        else:
            grid = project.grid  # the core owns which cell each unit is in
            self.roles, self.layers, self.cells = list(grid.roles), list(grid.layers), grid.cells
        self.endResetModel()

    # ----- lookup -----

    def cell(self, index: QModelIndex) -> tuple[str, int | None]:
        return self.roles[index.column()], self.layers[index.row()]

    def index_of(self, role: str, layer: int | None) -> QModelIndex:
        if role not in self.roles or layer not in self.layers:
            return QModelIndex()
        return self.index(self.layers.index(layer), self.roles.index(role))

    def has_units(self, row: int, col: int) -> bool:
        return (self.roles[col], self.layers[row]) in self.cells

    def set_show_error(self, on: bool) -> None:
        self.show_error = on
        self.changed()

    def set_sensitivity(self, sensitivity: dict | None) -> None:
        self.sensitivity = sensitivity
        self.changed()

    def error(self, key, action) -> float | None:
        """The cell's measured relative error at `action` (what it shows, painted or not), or None: its
        output-space sensitivity while that map is on, else its weight error."""
        if self.sensitivity is not None:
            return self.sensitivity.get(key, {}).get(action.bits) if isinstance(action, Quantize) else None
        errors = self.controller.errors
        if errors is None or not isinstance(action, Quantize):
            return None
        project = self.controller.project
        units = project.units
        float_dtype = project.plan.float_dtype
        return errors.cell_error((units[i], decide(units[i], action, None, float_dtype)) for i in self.cells[key])

    def action(self, role: str, layer: int | None):
        key = (role, layer)
        if key in self.preview:
            return self.preview[key], None
        return self.controller.policy.decide(role, layer, self.controller.num_layers)

    # ----- Qt -----

    def rowCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self.layers)

    def columnCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self.roles)

    def flags(self, index):
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        if not self.has_units(index.row(), index.column()):
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal:
            if section >= len(self.roles):
                return None
            key = self.roles[section]
            if role == Qt.ItemDataRole.DisplayRole:
                return SHORT.get(key, key)
            if role == Qt.ItemDataRole.ToolTipRole:
                return f"{ROLE_BY_KEY[key].label}\nRight-click to set the whole column"
            if role == item_roles.ROLE_KEY:
                return key
            return None
        if section >= len(self.layers):
            return None
        layer = self.layers[section]
        if role == Qt.ItemDataRole.DisplayRole:
            return "out" if layer is None else str(layer)
        if role == Qt.ItemDataRole.ToolTipRole:
            grid = self.controller.project.grid
            where = "Units outside the layers (embeddings, lm_head, final norm, vision)" if layer is None \
                else grid.row_name(layer).capitalize()
            return f"{where}\nRight-click to set the whole row"
        if role == item_roles.LAYER:
            return layer
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or self.controller.policy is None:
            return None
        key = self.cell(index)
        present = key in self.cells
        if role == item_roles.HAS_UNITS:
            return present
        if role == item_roles.ROLE_KEY:
            return key[0]
        if role == item_roles.LAYER:
            return key[1]
        if not present:
            return None
        action, rule = self.action(*key)
        if (self.show_error or self.sensitivity is not None) and role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.BackgroundRole,
                                        Qt.ItemDataRole.ForegroundRole, item_roles.ERROR):
            return self._error_data(key, action, role)
        if role == Qt.ItemDataRole.DisplayRole:
            return action_short(action)
        if role == Qt.ItemDataRole.BackgroundRole:
            return action_colour(action)
        if role == Qt.ItemDataRole.ForegroundRole:
            return text_on(action_colour(action))
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignCenter)
        if role == Qt.ItemDataRole.FontRole and key in self.preview:
            return self._bold
        if role == item_roles.ACTION:
            return action
        if role == item_roles.RULE_INDEX:
            return rule
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(key, action, rule)
        if role == item_roles.ERROR:
            return self.error(key, action)
        return None

    def _error_data(self, key, action, role):
        """Heat-map mode: unquantized cells keep their label on a neutral background."""
        error = self.error(key, action)
        if role == item_roles.ERROR:
            return error
        if role == Qt.ItemDataRole.DisplayRole:
            return error_text(error, sign=False) if isinstance(action, Quantize) else action_short(action)
        if not isinstance(action, Quantize):  # a faint grey over the theme's base; the theme's text colour
            return UNQUANTIZED_SHADE if role == Qt.ItemDataRole.BackgroundRole else None
        colour = error_colour(error)
        return colour if role == Qt.ItemDataRole.BackgroundRole else text_on(colour)

    def _tooltip(self, key, action, rule) -> str:
        role, layer = key
        project = self.controller.project
        units = self.cells[key]
        lines = [f"{ROLE_BY_KEY[role].label}, {project.grid.row_name(layer)}: {action.label()}"]
        if rule is not None:
            lines.append(f"decided by rule {rule + 1}: {self.controller.policy.rules[rule].label()}")
        if isinstance(action, Quantize) and not any(project.units[i].kind == "module" for i in units):
            lines.append("these tensors cannot be quantized; they stay as they are")
        size = sum(project.estimate.unit_bytes[i] for i in units)
        lines.append(f"{len(units)} unit(s), {human_bytes(size)} after conversion")
        errors = self.controller.errors
        if isinstance(action, Quantize) and self.sensitivity is not None:
            error = self.error(key, action)
            lines.append(f"relative output error at {action.label()}: {error_text(error)} (output-space sensitivity, "
                         "calibration pass)" if error is not None
                         else f"output-space sensitivity at {action.label()}: not measured")
        elif isinstance(action, Quantize) and errors is not None:
            error = self.error(key, action)
            what = "from the survey" if errors.source == "survey" else f"from {errors.source}"
            lines.append(f"relative error at {action.label()}: {error_text(error)} ({what})" if error is not None
                         else f"relative error at {action.label()}: not measured (run the survey)")
            if action.bits in TYPICAL_ERROR:
                lines.append(f"typical for {action.bits}-bit on trained weights: {TYPICAL_ERROR[action.bits]}")
        return "\n".join(lines)

    def changed(self, rect=None) -> None:
        """One dataChanged for a rectangle (r0, c0, r1, c1), or for the whole grid."""
        if not self.layers or not self.roles:
            return
        r0, c0, r1, c1 = rect if rect else (0, 0, len(self.layers) - 1, len(self.roles) - 1)
        self.dataChanged.emit(self.index(r0, c0), self.index(r1, c1))
