"""The tensor tree panel: filter bar, role legend and the tree view."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QItemSelectionModel, QModelIndex, QPoint, Qt, Signal
from PySide6.QtGui import QAction, QFont, QFontMetrics, QKeySequence
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QStyledItemDelegate,
                               QToolButton, QTreeView, QVBoxLayout, QWidget)

from studio.core.model.roles import ROLE_BY_KEY
from studio.views import item_roles
from studio.views.tensor_filter import TensorFilterModel
from studio.views.tensor_model import (AFTER, BEFORE, COLUMNS, DECISION, DTYPE, ERROR, NAME, ROLE, SHAPE,
                                       TensorTreeModel)

# The columns beside the name, by what a person checks first: Decision always sits in the dock's view
# (a 1280x800 laptop's dock has ~255 px beside a scroll bar), the next ones join while the name keeps
# NAME_ROOM, the rest scroll into view.
ALWAYS_SHOWN = (DECISION,)
SHOWN_IF_ROOM = (AFTER, ERROR, BEFORE)
NAME_MIN = 100  # px: a unit's leaf ("…q_proj") under two indents, in a dock narrower than laptops have
NAME_ROOM = 170  # px the name keeps before another column joins (a vision unit's "…attn.qkv.weight")
INDENT = 14  # px a level (the style's 20 takes a tensor's leaf from a narrow dock)
# The widest text each column shows (a unit's decision with a note; sizes up to 999.99), in the layer rows'
# bold too, so a policy change never widens a column under the pointer. Layer summaries may elide.
WIDEST = {AFTER: "999.99 KB", BEFORE: "999.99 KB", DECISION: "8-bit g128 *", ERROR: "<0.01%"}
DETAIL_WIDTHS = {ROLE: 130, SHAPE: 140, DTYPE: 90}  # past the view's right edge at a laptop's dock width
CELL_PADDING = 8  # px around a cell's text (the style puts 3 each side), so nothing elides at the widest


def legend_html(roles: list[str]) -> str:
    items = [f"<span style='color:{ROLE_BY_KEY[r].colour}'>&#9632;</span>&nbsp;"
             f"{ROLE_BY_KEY[r].label.replace(' ', '&nbsp;')}"
             for r in roles]
    return " &nbsp; ".join(items)


class ElideRight(QStyledItemDelegate):
    """Decisions and sizes cut on the right ("8-bit · 4-b…"): the view cuts names on the left."""

    def initStyleOption(self, option, index):
        super().initStyleOption(option, index)
        option.textElideMode = Qt.TextElideMode.ElideRight


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

        self.view = QTreeView(uniformRowHeights=True, alternatingRowColors=False, indentation=INDENT)
        self.view.setTextElideMode(Qt.TextElideMode.ElideLeft)  # "…k_proj.weight": the leaf tells names apart
        self.view.setModel(self.proxy)
        self._elide_right = ElideRight(self.view)
        for col in range(len(COLUMNS)):
            if col != NAME:
                self.view.setItemDelegateForColumn(col, self._elide_right)
        self.view.setSelectionMode(QTreeView.SelectionMode.SingleSelection)
        self.view.setSelectionBehavior(QTreeView.SelectionBehavior.SelectRows)
        header = self.view.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(NAME, QHeaderView.ResizeMode.Interactive)
        self.view.setColumnWidth(NAME, 250)
        for col, width in DETAIL_WIDTHS.items():
            self.view.setColumnWidth(col, width)
        self._fit_to_contents()
        # The name takes what the viewport leaves: also when a vertical scroll bar comes or goes.
        self.view.viewport().installEventFilter(self)
        for visual, col in enumerate((NAME, DECISION, AFTER, ERROR, BEFORE)):  # what changes with the policy first
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

    def _fit_to_contents(self) -> None:
        """The live columns as wide as their header or their widest text, whichever is wider."""
        bold = QFont(self.view.font())
        bold.setBold(True)
        metrics, header = QFontMetrics(bold), self.view.header()  # bold is the wider
        for col, text in WIDEST.items():
            self.view.setColumnWidth(col, max(header.sectionSizeHint(col), metrics.horizontalAdvance(text)
                                              + CELL_PADDING))

    def eventFilter(self, watched, event):
        if event.type() == QEvent.Type.Resize and watched is self.view.viewport():
            self._fit_name()
        return super().eventFilter(watched, event)

    def changeEvent(self, event):
        super().changeEvent(event)
        if event.type() == QEvent.Type.FontChange:
            self._fit_to_contents()
            self._fit_name()

    def _fit_name(self) -> None:
        """Name and Decision fit the dock's view (names are cut from the left, so the leaves that tell them
        apart stay); Size after, Error and Size before join while the name keeps NAME_ROOM; the other
        columns scroll (a column is either wholly in view or starts at its right edge)."""
        view = self.view
        room = view.viewport().width() - sum(view.columnWidth(col) for col in ALWAYS_SHOWN)
        for col in SHOWN_IF_ROOM:
            if room - view.columnWidth(col) < NAME_ROOM:
                break
            room -= view.columnWidth(col)
        view.setColumnWidth(NAME, max(NAME_MIN, room))

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
