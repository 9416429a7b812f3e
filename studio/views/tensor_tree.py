"""The tensor tree panel: filter bar, role legend and the tree view."""

from __future__ import annotations

from PySide6.QtCore import QItemSelectionModel, QModelIndex, QPoint, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QToolButton, QTreeView,
                               QVBoxLayout, QWidget)

from studio.core.model.roles import ROLE_BY_KEY
from studio.views import item_roles
from studio.views.tensor_filter import TensorFilterModel
from studio.views.tensor_model import AFTER, BEFORE, COLUMNS, DECISION, ERROR, NAME, TensorTreeModel


def legend_html(roles: list[str]) -> str:
    items = [f"<span style='color:{ROLE_BY_KEY[r].colour}'>&#9632;</span>&nbsp;"
             f"{ROLE_BY_KEY[r].label.replace(' ', '&nbsp;')}"
             for r in roles]
    return " &nbsp; ".join(items)


class TensorTreePanel(QWidget):
    unit_selected = Signal(int)  # a unit's index in project.units

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model = TensorTreeModel(self)
        self.proxy = TensorFilterModel(self)
        self.proxy.setSourceModel(self.model)

        self.search = QLineEdit(placeholderText="Filter (q_proj, experts.7, w2…)")
        self.search.setClearButtonEnabled(True)
        self.search.setToolTip("Show only units whose path, or a checkpoint tensor they are made of, contains "
                               "this text (for example q_proj, experts, experts.7, w2, layers.7)")
        self.role_box = QComboBox(toolTip="Show one role only")
        self.layer_box = QComboBox(toolTip="Show one layer only")
        self.search.textChanged.connect(self._search_changed)
        self.role_box.currentIndexChanged.connect(
            lambda _: self.proxy.set_filter(role=self.role_box.currentData()))
        self.layer_box.currentIndexChanged.connect(
            lambda _: self.proxy.set_filter(layer=self.layer_box.currentData()))

        self.view = QTreeView(uniformRowHeights=True, alternatingRowColors=False)
        self.view.setTextElideMode(Qt.TextElideMode.ElideLeft)  # "…k_proj.weight": the leaf tells names apart
        self.view.setModel(self.proxy)
        self.view.setSelectionMode(QTreeView.SelectionMode.SingleSelection)
        self.view.setSelectionBehavior(QTreeView.SelectionBehavior.SelectRows)
        header = self.view.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(NAME, QHeaderView.ResizeMode.Interactive)
        for col, width in ((NAME, 250), (1, 130), (2, 140), (3, 90), (DECISION, 95), (BEFORE, 82), (AFTER, 82),
                           (ERROR, 64)):
            self.view.setColumnWidth(col, width)
        for visual, col in enumerate((NAME, AFTER, DECISION, ERROR, BEFORE)):  # what changes with the policy first
            header.moveSection(header.visualIndex(col), visual)
        self.view.selectionModel().currentRowChanged.connect(self._current_changed)
        # Rows that come into view after a policy change: their parents catch up (one signal each).
        self.view.expanded.connect(self._refresh)
        self.view.verticalScrollBar().valueChanged.connect(self._refresh)

        self.legend = QLabel(wordWrap=True, textFormat=Qt.TextFormat.RichText)
        self.legend.setToolTip("Row colours: the role of each unit (colour-blind-safe palette); "
                               "alternate layers are shaded")

        # What the tree is filtered by, in words, and a way back to every unit: a select-click on the
        # grid sets the role and layer boxes, which is easy to miss.
        self.filters = QLabel(objectName="active_filters", wordWrap=True)
        self.filters.setStyleSheet("#active_filters { background: palette(highlight); color: palette(highlighted-text);"
                                   " border-radius: 3px; padding: 2px 6px; }")
        self.clear_filters = QToolButton(text="Clear", toolTip="Show every unit again (Esc)")
        self.clear_filters.clicked.connect(self.clear)
        clear_key = QAction(self, shortcut=QKeySequence(Qt.Key.Key_Escape))
        clear_key.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        clear_key.triggered.connect(self.clear)
        self.addAction(clear_key)
        self.filter_row = QWidget(visible=False)
        chips = QHBoxLayout(self.filter_row)
        chips.setContentsMargins(0, 0, 0, 0)
        chips.addWidget(self.filters, 1)
        chips.addWidget(self.clear_filters)
        self.proxy.filter_changed.connect(self._show_filters)

        bar = QHBoxLayout()
        bar.addWidget(self.search, 3)
        bar.addWidget(self.role_box, 1)
        bar.addWidget(self.layer_box, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(self.filter_row)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.legend)
        self._syncing = False

    def set_project(self, project) -> None:
        self.model.set_project(project)
        self.role_box.blockSignals(True)
        self.layer_box.blockSignals(True)
        self.role_box.clear()
        self.layer_box.clear()
        self.role_box.addItem("All roles", None)
        self.layer_box.addItem("All layers", "any")
        if project is not None:
            roles = project.roles_present()
            for key in roles:
                self.role_box.addItem(ROLE_BY_KEY[key].label, key)
            for layer in project.grid.layers:
                self.layer_box.addItem(project.grid.row_name(layer).capitalize(), layer)
            self.legend.setText(legend_html(roles))
        self.role_box.blockSignals(False)
        self.layer_box.blockSignals(False)
        self.proxy.set_filter(text="", role=None, layer="any")
        self.search.clear()

    def _show_filters(self) -> None:
        proxy, parts = self.proxy, []
        if proxy.layer != "any":
            parts.append(self.layer_box.currentText().lower() if self.layer_box.currentIndex() > 0
                         else "outside the layers" if proxy.layer is None else f"layer {proxy.layer}")
        if proxy.role is not None:
            parts.append(ROLE_BY_KEY[proxy.role].label if proxy.role in ROLE_BY_KEY else proxy.role)
        if proxy.text:
            parts.append(f"\u201c{proxy.text}\u201d")
        self.filters.setText("Filtered: " + ", ".join(parts))
        self.filter_row.setVisible(bool(parts))

    def clear(self) -> None:
        """Every filter off: all roles, all layers, no text."""
        self.role_box.setCurrentIndex(0)
        self.layer_box.setCurrentIndex(0)
        self.search.clear()

    def resizeEvent(self, event):
        """Name and Size after always fit the dock, and Decision too when there is room (names are cut
        from the left, so the leaves that tell them apart stay); the other columns scroll."""
        super().resizeEvent(event)
        room = self.view.viewport().width() - self.view.columnWidth(AFTER)
        if room - self.view.columnWidth(DECISION) >= 220:
            room -= self.view.columnWidth(DECISION)
        self.view.setColumnWidth(NAME, max(140, room))

    def _search_changed(self, text: str) -> None:
        self.proxy.set_filter(text=text)
        if text.strip():
            self._expand_to_units()

    def _expand_to_units(self) -> None:
        """Open every layer and block shown, down to the units (not their tensors)."""
        for row in range(self.proxy.rowCount()):
            group = self.proxy.index(row, 0)
            self.view.expand(group)
            for child in range(self.proxy.rowCount(group)):
                self.view.expand(self.proxy.index(child, 0, group))

    def shown_parents(self) -> list:
        """The tree nodes whose child rows are on screen now, top to bottom (none while hidden)."""
        view = self.view
        if not view.isVisible():
            return []
        height = view.viewport().height()
        index = view.indexAt(QPoint(0, 0))
        parents, seen = [], set()
        while index.isValid() and view.visualRect(index).top() < height:
            node = self.model.node(self.proxy.mapToSource(index)).parent
            if node not in seen:
                seen.add(node)
                parents.append(node)
            index = view.indexBelow(index)
        return parents

    def policy_updated(self) -> int:
        """Tell the view what changed with the policy: one dataChanged per parent on screen."""
        return self.model.policy_updated(self.shown_parents())

    def set_errors(self, errors) -> None:
        self.model.set_errors(errors, self.shown_parents())

    def _refresh(self, *_) -> None:
        self.model.refresh(self.shown_parents())

    def showEvent(self, event):
        super().showEvent(event)
        self._refresh()

    def show_cell(self, role, layer) -> None:
        """Filter the tree to one grid cell (role and layer) and expand it; (None, None) clears."""
        self._syncing = True
        try:
            self.role_box.setCurrentIndex(max(0, self.role_box.findData(role)) if role else 0)
            layer_pos = self.layer_box.findData(layer) if role else 0
            self.layer_box.setCurrentIndex(max(0, layer_pos))
            if role:
                self._expand_to_units()
        finally:
            self._syncing = False

    def select_unit(self, unit: int) -> None:
        source = self.model.unit_index(unit)
        index = self.proxy.mapFromSource(source)
        if index.isValid():
            self.view.selectionModel().setCurrentIndex(
                index, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
            self.view.scrollTo(index)

    def _current_changed(self, current: QModelIndex, _previous) -> None:
        if self._syncing or not current.isValid():
            return
        unit = current.data(item_roles.UNIT_INDEX)
        if unit is not None and unit >= 0:
            self.unit_selected.emit(unit)

    @staticmethod
    def columns() -> tuple[str, ...]:
        return COLUMNS
