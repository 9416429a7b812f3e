"""The tensor tree's filter: by name text (a unit's path or its checkpoint names), role and layer
(a grid cell), parents of a match kept, and each layer and block counting its matches."""

from __future__ import annotations

from PySide6.QtCore import QSortFilterProxyModel, Signal

from studio.views.tensor_model import NAME, Node


class TensorFilterModel(QSortFilterProxyModel):
    """Filter by name text, role and layer; parents of a match stay visible."""

    filter_changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setRecursiveFilteringEnabled(True)
        self.setDynamicSortFilter(False)
        self.text = ""
        self.role: str | None = None
        self.layer: object = "any"  # "any", None (outside layers) or an int

    def set_filter(self, text: str | None = None, role: object = "keep", layer: object = "keep") -> None:
        if text is not None:
            self.text = text.strip().lower()
        if role != "keep":
            self.role = role
        if layer != "keep":
            self.layer = layer
        self.beginFilterChange()
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        self._count_matches()
        self.filter_changed.emit()

    def _count_matches(self) -> None:
        """Each layer and block says how many of its units the filter shows ("(3 of 12)")."""
        model = self.sourceModel()
        for group in model.root.children:
            group.matched = 0 if self.active else -1
            for block in group.children:
                block.matched = sum(map(self._unit_matches, block.children)) if self.active else -1
                group.matched += max(block.matched, 0)
        if model.root.children:
            model.dataChanged.emit(model.index(0, NAME), model.index(len(model.root.children) - 1, NAME))
            for row, group in enumerate(model.root.children):
                if group.children:
                    parent = model.index(row, NAME)
                    model.dataChanged.emit(model.index(0, NAME, parent),
                                           model.index(len(group.children) - 1, NAME, parent))

    def _unit_matches(self, node: Node) -> bool:
        if self.layer != "any" and node.layer != self.layer:
            return False
        if self.role is not None and node.role != self.role:
            return False
        return not self.text or self.text in node.search

    @property
    def active(self) -> bool:
        return bool(self.text) or self.role is not None or self.layer != "any"

    def filterAcceptsRow(self, source_row, source_parent):
        if not self.active:
            return True
        parent: Node = source_parent.internalPointer() if source_parent.isValid() else self.sourceModel().root
        node = parent.children[source_row]
        if node.kind == "tensor":
            # Source tensors are built lazily: they follow their unit, so loading them
            # never changes which of their ancestors are shown.
            node = node.parent
        if self.layer != "any" and node.layer != self.layer:
            return False
        if self.role is not None and node.role != self.role:
            return False
        if self.text:
            return self.text in node.search
        return node.kind in ("unit", "tensor") or (self.role is None and node.kind != "root")
