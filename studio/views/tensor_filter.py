"""The tensor tree's filter: by name text, role and layer (a grid cell), parents of a match kept."""

from __future__ import annotations

from PySide6.QtCore import QSortFilterProxyModel

from studio.views.tensor_model import Node


class TensorFilterModel(QSortFilterProxyModel):
    """Filter by name text, role and layer; parents of a match stay visible."""

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
