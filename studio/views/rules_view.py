"""The policy's rules as a table; the rule deciding the hovered grid cell is highlighted."""

from __future__ import annotations

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt
from PySide6.QtGui import QFont, QPalette
from PySide6.QtWidgets import QHeaderView, QTableView

from studio.core.policy.bit_policy import Policy
from studio.views.palette import action_colour, text_on

COLUMNS = ("#", "Roles", "Layers", "Action", "Note")


class RulesModel(QAbstractTableModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.policy: Policy | None = None
        self.highlight: int | None = None
        self.inactive: set[int] = set()
        self._bold = QFont()
        self._bold.setBold(True)
        self._italic = QFont()
        self._italic.setItalic(True)
        self._faint = QPalette().color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text)
        self._highlight_colour = QPalette().color(QPalette.ColorRole.Highlight)

    def set_policy(self, policy: Policy | None, inactive=()) -> None:
        """Show `policy`; the rows in `inactive` match nothing in the open model and look it."""
        if policy is self.policy and set(inactive) == self.inactive:
            return
        self.beginResetModel()  # a few dozen rows at most: a reset is the honest signal
        self.policy = policy
        self.inactive = set(inactive)
        self.highlight = None
        self.endResetModel()

    def set_highlight(self, rule: int | None) -> None:
        if rule == self.highlight:
            return
        old, self.highlight = self.highlight, rule
        for row in (old, rule):
            if row is not None and row < self.rowCount():
                self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    def rowCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() or self.policy is None else len(self.policy.rules)

    def columnCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or self.policy is None:
            return None
        rule = self.policy.rules[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return (str(index.row() + 1), ", ".join(rule.roles), rule.layers.label(), rule.action.label(),
                    rule.note)[col]
        idle = index.row() in self.inactive
        if role == Qt.ItemDataRole.ToolTipRole:
            return (f"Rule {index.row() + 1} (later rules override earlier ones): {rule.label()}"
                    + ("\nMatches nothing in this model: it does nothing here." if idle else ""))
        if idle and role == Qt.ItemDataRole.ForegroundRole:
            return self._faint
        if idle and role == Qt.ItemDataRole.FontRole:
            return self._italic
        if idle and role == Qt.ItemDataRole.BackgroundRole and col == 3:
            return None  # no bits colour: nothing gets these bits
        if role == Qt.ItemDataRole.BackgroundRole:
            if col == 3:
                return action_colour(rule.action)
            if index.row() == self.highlight:
                return self._highlight_colour
        if role == Qt.ItemDataRole.ForegroundRole:
            if col == 3:
                return text_on(action_colour(rule.action))
            if index.row() == self.highlight:
                return text_on(self._highlight_colour)
        if role == Qt.ItemDataRole.FontRole and index.row() == self.highlight:
            return self._bold
        return None


class RulesView(QTableView):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.rules = RulesModel(self)
        self.setModel(self.rules)
        self.setSelectionMode(QTableView.SelectionMode.NoSelection)
        self.setWordWrap(False)
        self.verticalHeader().hide()
        self.verticalHeader().setDefaultSectionSize(20)
        header = self.horizontalHeader()
        header.setStretchLastSection(True)
        for col, width in enumerate((30, 150, 130, 110)):
            self.setColumnWidth(col, width)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.setToolTip("The policy's rules, top to bottom; a later rule overrides an earlier one. "
                        "The rule deciding the cell under the mouse is highlighted.")

    def highlight(self, rule: int | None) -> None:
        self.rules.set_highlight(rule)
        if rule is not None:
            self.scrollTo(self.rules.index(rule, 0))
