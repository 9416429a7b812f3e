"""The tensor tree: model -> layers -> blocks -> units -> source tensors.

A thin QAbstractItemModel over a Project. Nodes are built once per project
(about 2,000 for MiniMax-M3); the source tensors under a unit (128 for a
stacked expert projection) are built only when the unit is expanded
(canFetchMore/fetchMore). A policy change emits one ranged dataChanged (the
decision, size and error columns) per parent whose rows a view shows, never a
reset: the panel says which parents those are (`policy_updated(shown)`), the
others are marked stale and caught up by `refresh` when they come into view.
The Error column shows a unit's measured
relative error at its current decision (survey or quant_errors.json), blank
where nothing was measured at that setting.
"""

from __future__ import annotations

import re

from PySide6.QtCore import QAbstractItemModel, QModelIndex, Qt
from PySide6.QtGui import QColor, QFont, QIcon, QPalette

from studio.core.formatting import human_bytes
from studio.core.project import Project
from studio.core.model.roles import BLOCK_ORDER, ROLE_BY_KEY, block_of
from studio.views import item_roles
from studio.views.palette import error_text, role_colour, role_icon, tint

COLUMNS = ("Name", "Role", "Shape", "Source dtype", "Decision", "Size before", "Size after", "Error")
NAME, ROLE, SHAPE, DTYPE, DECISION, BEFORE, AFTER, ERROR = range(len(COLUMNS))
LIVE_COLUMNS = (DECISION, AFTER, ERROR)
LIVE_ROLES = [Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole, item_roles.ERROR, item_roles.SORT_VALUE]

_LAYER_PREFIX = re.compile(r"^.*?\blayers\.\d+\.")


class Node:
    __slots__ = ("parent", "row", "kind", "name", "children", "units", "unit", "tensor", "layer", "role",
                 "fetched", "search", "seen", "matched")

    def __init__(self, parent, kind, name, layer=None, role=None, unit=-1, tensor=None):
        self.parent, self.kind, self.name = parent, kind, name
        self.layer, self.role, self.unit, self.tensor = layer, role, unit, tensor
        self.children: list[Node] = []
        self.units: list[int] = []
        self.row = 0
        self.fetched = kind != "unit"
        self.search = name.lower()
        self.seen = 0  # the policy generation this node's children were last told about
        self.matched = -1  # units under a layer or block that the tree's filter shows; -1: no filter

    @property
    def live(self) -> bool:
        """Whether this node's children have columns that follow the policy (a unit's source tensors do not)."""
        return bool(self.children) and self.kind != "unit"

    def add(self, child: "Node") -> "Node":
        child.row = len(self.children)
        self.children.append(child)
        return child


def _short(path: str) -> str:
    short = _LAYER_PREFIX.sub("", path)
    return short.removeprefix("language_model.model.").removeprefix("language_model.")


def _shape(shape) -> str:
    return " × ".join(str(d) for d in shape)


class TensorTreeModel(QAbstractItemModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.project: Project | None = None
        self.root = Node(None, "root", "")
        self.errors = None  # ErrorMap
        self.generation = 0  # bumped by every policy change; see Node.seen
        self._unit_source: list[int] = []
        self._base = QColor("#FFFFFF")
        self._alt = QColor("#F3F3F3")
        self._shades: dict[tuple, QColor] = {}  # row backgrounds by (role, is unit, odd layer)
        self._bold = QFont()
        self._bold.setBold(True)

    # ----- building -----

    def set_project(self, project: Project | None) -> None:
        self.beginResetModel()
        self.project = project
        self.root = Node(None, "root", "")
        if project is not None:
            self._build(project)
        self.endResetModel()

    def _build(self, project: Project) -> None:
        self._unit_source = project.source_sizes.unit_source  # the core's, each source counted once
        groups: dict[object, Node] = {}
        blocks: dict[tuple, Node] = {}
        grid = project.grid
        for layer in grid.layers:
            if any((role, layer) in grid.cells for role in grid.roles):
                name = grid.row_name(layer).capitalize()
                groups[layer] = self.root.add(Node(self.root, "layer", name, layer=layer))
        order = sorted(range(len(project.units)),
                       key=lambda i: (BLOCK_ORDER.index(block_of(project.units[i].role)), i))
        for i in order:
            unit = project.units[i]
            group = groups[unit.layer]
            block_name = block_of(unit.role)
            key = (unit.layer, block_name)
            if key not in blocks:
                blocks[key] = group.add(Node(group, "block", block_name, layer=unit.layer))
            block = blocks[key]
            node = block.add(Node(block, "unit", _short(unit.path), layer=unit.layer, role=unit.role, unit=i))
            # The filter matches the unit's path and the checkpoint names it is made of
            # ("experts.7.w2" finds the stacked expert unit that holds it).
            node.search = "\n".join((unit.path, *unit.sources)).lower()
            node.units.append(i)
            block.units.append(i)
            group.units.append(i)

    def set_errors(self, errors, shown=None) -> None:
        self.errors = errors
        self.policy_updated(shown)

    def _error(self, node: Node) -> float | None:
        if self.errors is None or node.kind != "unit":
            return None
        return self.errors.unit_error(self.project.units[node.unit], self.project.plan.decisions[node.unit])

    def set_palette(self, palette: QPalette) -> None:
        self._base = palette.color(QPalette.ColorRole.Base)
        self._alt = tint(palette.color(QPalette.ColorRole.Text), self._base, 0.045)
        self._shades = {}
        if self.rowCount():
            self.dataChanged.emit(self.index(0, 0), self.index(self.rowCount() - 1, len(COLUMNS) - 1))

    # ----- structure -----

    def node(self, index: QModelIndex) -> Node:
        return index.internalPointer() if index.isValid() else self.root

    def index(self, row, column, parent=QModelIndex()):
        children = (parent.internalPointer() if parent.isValid() else self.root).children  # called per cell painted
        if 0 <= row < len(children) and 0 <= column < len(COLUMNS):
            return self.createIndex(row, column, children[row])
        return QModelIndex()

    def parent(self, index=QModelIndex()):
        if not index.isValid():
            return QModelIndex()
        parent = index.internalPointer().parent
        if parent is None or parent is self.root:
            return QModelIndex()
        return self.createIndex(parent.row, 0, parent)

    def rowCount(self, parent=QModelIndex()):
        if parent.isValid() and parent.column() != 0:
            return 0
        return len(self.node(parent).children)

    def columnCount(self, parent=QModelIndex()):
        return len(COLUMNS)

    def hasChildren(self, parent=QModelIndex()):
        if parent.isValid() and parent.column() != 0:
            return False
        node = self.node(parent)
        if node.kind == "unit" and not node.fetched:
            return bool(self.project.units[node.unit].sources)
        return bool(node.children)

    def canFetchMore(self, parent):
        if not parent.isValid() or parent.column() != 0:
            return False
        node = self.node(parent)
        return node.kind == "unit" and not node.fetched

    def fetchMore(self, parent):
        node = self.node(parent)
        if node.fetched or node.kind != "unit":
            return
        sources = self.project.units[node.unit].sources
        node.fetched = True
        if not sources:
            return
        self.beginInsertRows(parent, 0, len(sources) - 1)
        for name in sources:
            child = node.add(Node(node, "tensor", _short(name), layer=node.layer, role=node.role,
                                  unit=node.unit, tensor=name))
            child.search = name.lower()
        self.endInsertRows()

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignRight if section in (BEFORE, AFTER, ERROR) else Qt.AlignmentFlag.AlignLeft)
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole and section == ERROR:
            return ("Relative error ||dequantize(quantize(W)) - W|| / ||W|| at the unit's current decision, "
                    "from the error survey or a loaded quant_errors.json")
        return None

    def flags(self, index):
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

    # ----- data -----

    def _icon(self, role: str) -> QIcon:
        return role_icon(role, 12)

    def _decision_text(self, node: Node) -> str:
        decisions = self.project.plan.decisions
        if node.kind == "unit":
            decision = decisions[node.unit]
            text = decision.label()
            if decision.action == "quantize":
                text += f" g{decision.group_size}"
            return text + (" *" if decision.note else "")
        if node.kind == "tensor":
            return ""
        labels = []
        for i in node.units:
            label = decisions[i].label()
            if label not in labels:
                labels.append(label)
                if len(labels) > 3:
                    return "mixed"
        return " · ".join(labels)

    def _size(self, node: Node, before: bool) -> int | None:
        if node.kind == "tensor":
            return self.project.inventory.by_name[node.tensor].nbytes if before else None
        if before:
            return sum(self._unit_source[i] for i in node.units)
        sizes = self.project.estimate.unit_bytes
        return sum(sizes[i] for i in node.units)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or self.project is None:
            return None
        node: Node = index.internalPointer()
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(node, col)
        if role == Qt.ItemDataRole.DecorationRole and col == NAME and node.role is not None:
            return self._icon(node.role)
        if role == Qt.ItemDataRole.BackgroundRole:
            key = (node.role, node.kind == "unit", (node.layer or 0) % 2)
            colour = self._shades.get(key)
            if colour is None:
                shade = self._alt if key[2] else self._base
                colour = shade if node.role is None else tint(role_colour(node.role), shade, 0.10 if key[1] else 0.05)
                self._shades[key] = colour
            return colour
        if role == Qt.ItemDataRole.FontRole and node.kind == "layer":
            return self._bold
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (BEFORE, AFTER, ERROR):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(node)
        if role == item_roles.ROLE_KEY:
            return node.role
        if role == item_roles.LAYER:
            return node.layer
        if role == item_roles.UNIT_INDEX:
            return node.unit
        if role == item_roles.NODE_KIND:
            return node.kind
        if role == item_roles.SORT_VALUE and col in (BEFORE, AFTER):
            return self._size(node, col == BEFORE)
        if role in (item_roles.ERROR, item_roles.SORT_VALUE) and col == ERROR:
            return self._error(node)
        if role == item_roles.RULE_INDEX and node.kind == "unit":
            return self.project.plan.decisions[node.unit].rule
        return None

    def _display(self, node: Node, col: int):
        if col == NAME:
            if node.kind in ("layer", "block"):
                if node.matched >= 0:
                    return f"{node.name}  ({node.matched:,} of {len(node.units):,})"
                return f"{node.name}  ({len(node.units):,})"
            return node.name
        if col == ROLE:
            return ROLE_BY_KEY[node.role].label if node.role in ROLE_BY_KEY else ""
        if col == SHAPE:
            if node.kind == "unit":
                return _shape(self.project.units[node.unit].shape)
            if node.kind == "tensor":
                return _shape(self.project.inventory.by_name[node.tensor].shape)
            return ""
        if col == DTYPE:
            if node.kind == "unit":
                return self.project.units[node.unit].source_dtype
            if node.kind == "tensor":
                tensor = self.project.inventory.by_name[node.tensor]
                encoding = getattr(tensor, "encoding", "")
                return f"{tensor.dtype} ({encoding})" if encoding and encoding != tensor.dtype.lower() else tensor.dtype
            return ""
        if col == DECISION:
            return self._decision_text(node)
        if col == ERROR:
            error = self._error(node)
            return "" if error is None else error_text(error)
        size = self._size(node, col == BEFORE)
        return "" if size is None else human_bytes(size)

    def _tooltip(self, node: Node) -> str:
        if node.kind == "unit":
            unit = self.project.units[node.unit]
            decision = self.project.plan.decisions[node.unit]
            rule = decision.rule
            rule_text = (f"rule {rule + 1}: {self.project.policy.rules[rule].label()}" if rule is not None
                         else "no rule matched: kept as in the source")
            lines = [unit.path, f"{ROLE_BY_KEY[unit.role].label}, {len(unit.sources)} source tensor(s)",
                     f"decision: {decision.label()} ({rule_text})"]
            if decision.note:
                lines.append(f"note: {decision.note}")
            return "\n".join(lines)
        if node.kind == "tensor":
            return node.tensor
        return None

    # ----- live updates -----

    def policy_updated(self, shown=None) -> int:
        """Decisions, sizes and errors changed: one ranged dataChanged over the live columns per parent
        in `shown` (the parents a view shows rows of, top to bottom; None: every parent). The other
        parents are left stale for `refresh`: a view asks data() afresh for rows it has not shown,
        so nothing is lost meanwhile. Never a reset. Returns the number of signals."""
        if self.project is None:
            return 0
        self.generation += 1
        return self._emit(self._parents() if shown is None else shown)

    def refresh(self, shown) -> int:
        """Catch up the stale parents among `shown` (a subtree expanded or scrolled into view)."""
        if self.project is None:
            return 0
        return self._emit(node for node in shown if node.seen != self.generation)

    def _emit(self, parents) -> int:
        first, last = min(LIVE_COLUMNS), max(LIVE_COLUMNS)
        count = 0
        for node in parents:
            node.seen = self.generation
            if not node.live:
                continue
            children = node.children
            self.dataChanged.emit(self.createIndex(0, first, children[0]),
                                  self.createIndex(len(children) - 1, last, children[-1]), LIVE_ROLES)
            count += 1
        return count

    def _parents(self):
        """Every node with live children, in tree order."""
        stack = [self.root]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(child for child in reversed(node.children) if child.live)

    def unit_index(self, unit: int) -> QModelIndex:
        """The index of a unit's node (a walk over layers and blocks, not over tensors)."""
        for group in self.root.children:
            if not group.units or unit not in group.units:
                continue
            for block in group.children:
                for node in block.children:
                    if node.unit == unit:
                        return self.createIndex(node.row, 0, node)
        return QModelIndex()
