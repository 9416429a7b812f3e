"""The policy grid's view: painting with the mouse or the keyboard.

Mouse: press and drag paints the cells passed over; shift-click paints the
rectangle from the last clicked cell; a drag that reaches an edge scrolls the
grid (faster the further past the edge) and paints only cells that have been
on screen. Keyboard: arrows move the current cell (outlined in two tones so it
shows on any colour), Shift+arrows select a block, Space or Enter paints the
block (or the current cell) with the brush, the Menu key (or Shift+F10) opens
the set-row / set-column menu of the current cell. With the select tool a click
or Space shows the cell's tensors instead. Every stroke is one signal.
"""

from __future__ import annotations

from PySide6.QtCore import QPoint, QRect, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetrics, QPainter, QPen
from PySide6.QtWidgets import QHeaderView, QStyle, QStyledItemDelegate, QTableView

from studio.views import item_roles
from studio.views.palette import role_colour

AUTOSCROLL_MS = 40
AUTOSCROLL_MARGIN = 12  # px from an edge where a drag starts scrolling
PAINT_KEYS = (Qt.Key.Key_Space, Qt.Key.Key_Return, Qt.Key.Key_Enter)


def fitted(text: str, font: QFont, width: int) -> tuple[str, QFont]:
    """The cell text and font that fit `width`: as is, then in a smaller font, then cut."""
    if QFontMetrics(font).horizontalAdvance(text) <= width:
        return text, font
    for scale in (1.0, 0.85, 0.75):
        small = QFont(font)
        small.setPointSizeF(font.pointSizeF() * scale)
        if QFontMetrics(small).horizontalAdvance(text) <= width:
            return text, small
    return QFontMetrics(small).elidedText(text, Qt.TextElideMode.ElideRight, width), small


class CellDelegate(QStyledItemDelegate):
    """Cells drawn flat in their bits colour; cells with no units hatched; the selected block
    framed in the highlight colour; the current cell outlined black-inside-white."""

    def paint(self, painter: QPainter, option, index):
        rect = option.rect.adjusted(1, 1, -1, -1)
        if not index.data(item_roles.HAS_UNITS):
            painter.fillRect(rect, QBrush(QColor(128, 128, 128, 40), Qt.BrushStyle.BDiagPattern))
        else:
            painter.fillRect(rect, index.data(Qt.ItemDataRole.BackgroundRole))
            foreground = index.data(Qt.ItemDataRole.ForegroundRole)
            painter.setPen(foreground if foreground is not None else option.palette.text().color())
            font = index.data(Qt.ItemDataRole.FontRole) or option.font
            text, font = fitted(index.data(Qt.ItemDataRole.DisplayRole) or "", font, rect.width() - 2)
            painter.setFont(font)
            painter.save()
            painter.setClipRect(rect)  # never into the neighbour: "0.88%0.94%" read as one number
            painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)
            painter.restore()
        if option.state & QStyle.StateFlag.State_Selected:
            painter.setPen(QPen(option.palette.highlight().color(), 3))
            painter.drawRect(rect.adjusted(1, 1, -2, -2))
        view = option.widget
        if view is not None and view.hasFocus() and index == view.currentIndex():
            painter.setPen(QPen(QColor("white"), 4))
            painter.drawRect(rect.adjusted(1, 1, -2, -2))
            painter.setPen(QPen(QColor("black"), 2))
            painter.drawRect(rect.adjusted(1, 1, -2, -2))


class RoleHeader(QHeaderView):
    """Column headers with a strip of the role's colour above the short name."""

    def __init__(self, parent=None):
        super().__init__(Qt.Orientation.Horizontal, parent)
        self.setSectionsClickable(True)
        font = self.font()
        font.setPointSizeF(font.pointSizeF() * 0.85)  # "down", "Norm", "Head" fit a 30-pixel column
        self.setFont(font)
        self.setMinimumHeight(2 * self.fontMetrics().height() + 14)

    def paintSection(self, painter, rect, logical):
        super().paintSection(painter, rect, logical)
        key = self.model().headerData(logical, Qt.Orientation.Horizontal, item_roles.ROLE_KEY) if self.model() else None
        if key:
            painter.fillRect(QRect(rect.x() + 2, rect.y() + 1, rect.width() - 4, 5), role_colour(key))


class PolicyGridView(QTableView):
    stroke_finished = Signal(object, object)    # {(role, layer): action}, (r0, c0, r1, c1)
    stroke_moved = Signal(object)             # the stroke so far
    cell_clicked = Signal(object, object)     # (role, layer) with the select tool
    hovered_rule = Signal(object)             # rule index under the mouse, or None
    header_action = Signal(str, object)       # ("row", layer) or ("column", role): show a menu
    cell_menu = Signal(object, object, QPoint)  # (role, layer, global position): the Menu key on a cell

    def __init__(self, parent=None):
        super().__init__(parent)
        self.brush = None  # an Action, or None for the select tool
        self._stroke: dict[tuple[int, int], object] = {}
        self._last: tuple[int, int] | None = None
        self._anchor: tuple[int, int] | None = None
        self._drag_pos: QPoint | None = None
        self._scroll_timer = QTimer(self, interval=AUTOSCROLL_MS)
        self._scroll_timer.timeout.connect(self._autoscroll_step)
        self.setHorizontalHeader(RoleHeader(self))
        self.setItemDelegate(CellDelegate(self))
        self.setMouseTracking(True)
        self.setShowGrid(False)
        self.setAutoScroll(False)  # ours scrolls while painting, and paints only what was seen
        self.setSelectionMode(QTableView.SelectionMode.ContiguousSelection)
        self.setEditTriggers(QTableView.EditTrigger.NoEditTriggers)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.horizontalHeader().setMinimumSectionSize(30)
        self.horizontalHeader().setDefaultSectionSize(40)
        self.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.verticalHeader().setDefaultSectionSize(20)
        self.verticalHeader().setMinimumWidth(34)
        for header, kind in ((self.horizontalHeader(), "column"), (self.verticalHeader(), "row")):
            header.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
            header.customContextMenuRequested.connect(lambda pos, h=header, k=kind: self._header_menu(h, k, pos))

    def grid(self):
        return self.model()

    # ----- strokes -----

    def _cell_at(self, pos: QPoint) -> tuple[int, int] | None:
        index = self.indexAt(pos)
        if not index.isValid():
            return None
        return index.row(), index.column()

    def _add(self, cells) -> None:
        model = self.grid()
        fresh = False
        for row, col in cells:
            if model.has_units(row, col) and (row, col) not in self._stroke:
                self._stroke[(row, col)] = self.brush
                model.preview[model.roles[col], model.layers[row]] = self.brush
                model.dataChanged.emit(model.index(row, col), model.index(row, col))
                fresh = True
        if fresh:
            self.stroke_moved.emit(self.stroke())

    def stroke(self) -> dict:
        model = self.grid()
        return {(model.roles[c], model.layers[r]): a for (r, c), a in self._stroke.items()}

    @staticmethod
    def _line(a, b):
        (r0, c0), (r1, c1) = a, b
        steps = max(abs(r1 - r0), abs(c1 - c0), 1)
        return [(round(r0 + (r1 - r0) * t / steps), round(c0 + (c1 - c0) * t / steps)) for t in range(steps + 1)]

    def _finish(self) -> None:
        stroke, cells = self.stroke(), list(self._stroke)
        self._stroke = {}
        self.grid().preview = {}
        if cells:
            rows = [r for r, _ in cells]
            cols = [c for _, c in cells]
            self.stroke_finished.emit(stroke, (min(rows), min(cols), max(rows), max(cols)))

    # ----- the mouse -----

    def mousePressEvent(self, event):
        cell = self._cell_at(event.position().toPoint())
        if event.button() != Qt.MouseButton.LeftButton or cell is None:
            return super().mousePressEvent(event)
        self.setFocus(Qt.FocusReason.MouseFocusReason)
        self.setCurrentIndex(self.model().index(*cell))
        if self.brush is None:
            self.cell_clicked.emit(*self.grid().cell(self.model().index(*cell)))
            self._anchor = cell
            return
        self._stroke = {}
        if event.modifiers() & Qt.KeyboardModifier.ShiftModifier and self._anchor is not None:
            (r0, c0), (r1, c1) = self._anchor, cell
            self._add((r, c) for r in range(min(r0, r1), max(r0, r1) + 1) for c in range(min(c0, c1), max(c0, c1) + 1))
        else:
            self._add([cell])
            self._anchor = cell
        self._last = cell

    def mouseMoveEvent(self, event):
        pos = event.position().toPoint()
        if self._last is not None and event.buttons() & Qt.MouseButton.LeftButton:
            self._drag_pos = pos
            self._paint_to(pos)
            self._update_autoscroll()
            return
        cell = self._cell_at(pos)
        if cell is not None:
            self.hovered_rule.emit(self.model().index(*cell).data(item_roles.RULE_INDEX))
        super().mouseMoveEvent(event)

    def _paint_to(self, pos: QPoint) -> None:
        """Extend the stroke to the cell under `pos`, held inside the viewport: a cell off screen is
        reached by scrolling to it, never painted unseen."""
        area = self.viewport().rect()
        held = QPoint(min(max(pos.x(), 0), area.width() - 1), min(max(pos.y(), 0), area.height() - 1))
        cell = self._cell_at(held)
        if cell is not None and cell != self._last:
            self._add(self._line(self._last, cell))
            self._last = cell

    def _edge_speed(self) -> tuple[int, int]:
        """Rows and columns to scroll a tick: 0 inside, more the further past an edge the pointer is."""
        if self._drag_pos is None:
            return 0, 0
        area = self.viewport().rect()

        def speed(value, size):
            if value < AUTOSCROLL_MARGIN:
                return -(1 + (AUTOSCROLL_MARGIN - value) // 40)
            if value > size - AUTOSCROLL_MARGIN:
                return 1 + (value - size + AUTOSCROLL_MARGIN) // 40
            return 0

        return speed(self._drag_pos.y(), area.height()), speed(self._drag_pos.x(), area.width())

    def _update_autoscroll(self) -> None:
        if self._edge_speed() != (0, 0):
            if not self._scroll_timer.isActive():
                self._scroll_timer.start()
        else:
            self._scroll_timer.stop()

    def _autoscroll_step(self) -> None:
        rows, cols = self._edge_speed()
        if self._last is None or (rows, cols) == (0, 0):
            self._scroll_timer.stop()
            return
        for bar, step in ((self.verticalScrollBar(), rows), (self.horizontalScrollBar(), cols)):
            if step:
                bar.setValue(bar.value() + step * (1 if self.verticalScrollMode() == self.ScrollMode.ScrollPerItem
                                                   else self.verticalHeader().defaultSectionSize()))
        self._paint_to(self._drag_pos)

    def mouseReleaseEvent(self, event):
        self._scroll_timer.stop()
        self._drag_pos = None
        if self._last is None:
            return super().mouseReleaseEvent(event)
        self._last = None
        self._finish()

    def leaveEvent(self, event):
        self.hovered_rule.emit(None)
        super().leaveEvent(event)

    # ----- the keyboard -----

    def keyPressEvent(self, event):
        key, mods = event.key(), event.modifiers()
        plain = not (mods & ~Qt.KeyboardModifier.KeypadModifier)
        current = self.currentIndex()
        if key in PAINT_KEYS and plain and current.isValid():
            self._paint_selection()
            return
        if key == Qt.Key.Key_Menu or (key == Qt.Key.Key_F10 and mods & Qt.KeyboardModifier.ShiftModifier):
            self._current_cell_menu()
            return
        super().keyPressEvent(event)

    def _paint_selection(self) -> None:
        """Space/Enter: the brush over the selected block (or the current cell); with the select
        tool, show the current cell's tensors."""
        current = self.currentIndex()
        if self.brush is None:
            self.cell_clicked.emit(*self.grid().cell(current))
            return
        cells = [(i.row(), i.column()) for i in self.selectedIndexes()] or [(current.row(), current.column())]
        self._stroke = {}
        self._add(cells)
        self._finish()

    def contextMenuEvent(self, event):
        if event.reason() == event.Reason.Keyboard:
            # The Menu key on X11 arrives here, not in keyPressEvent, at the centre of the current cell
            # in this widget's coordinates (headers included): indexAt (viewport coordinates) would
            # find a cell two rows down. The menu is the current cell's, as for Shift+F10.
            self._current_cell_menu()
            event.accept()
            return
        index = self.indexAt(event.pos())  # a right-click: delivered through the viewport, in its coordinates
        if index.isValid():
            role, layer = self.grid().cell(index)
            self.cell_menu.emit(role, layer, event.globalPos())

    def _current_cell_menu(self) -> None:
        current = self.currentIndex()
        if current.isValid():
            role, layer = self.grid().cell(current)
            self.cell_menu.emit(role, layer, self.viewport().mapToGlobal(self.visualRect(current).center()))

    def _header_menu(self, header: QHeaderView, kind: str, pos: QPoint) -> None:
        section = header.logicalIndexAt(pos)
        if section < 0:
            return
        model = self.grid()
        target = model.roles[section] if kind == "column" else model.layers[section]
        self.header_action.emit(kind, target)

    def cell_rect(self, role, layer) -> QRect:
        return self.visualRect(self.grid().index_of(role, layer))
