"""Small widgets the panels share."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QSize, Qt, Signal
from PySide6.QtGui import QPainter
from PySide6.QtWidgets import QPlainTextEdit, QSizePolicy, QWidget

SEND_KEYS = (Qt.Key.Key_Return, Qt.Key.Key_Enter)


class ElidedLabel(QWidget):
    """Plain text, one or more lines, each cut with "…" to the width it is given; the whole text
    is the tooltip. Unlike a QLabel it never asks for more width than the layout has, so a long
    path or status never widens a dock or clips its neighbours. `elide` is one mode for every
    line or one per line (a path cut in the middle, figures at the end)."""

    def __init__(self, text: str = "", parent=None, *, lines: int = 1, elide=Qt.TextElideMode.ElideRight):
        super().__init__(parent)
        self._text = ""
        self._lines = lines
        self._elide = elide
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setText(text)

    def text(self) -> str:
        return self._text

    def setText(self, text: str) -> None:
        self._text = text
        self.setToolTip(text if text else "")
        self.update()

    def sizeHint(self) -> QSize:
        metrics = self.fontMetrics()
        width = max((metrics.horizontalAdvance(line) for line in self._text.split("\n")), default=0)
        return QSize(min(width, 400), metrics.lineSpacing() * self._lines + 2)

    def minimumSizeHint(self) -> QSize:
        return QSize(20, self.sizeHint().height())

    def paintEvent(self, event):
        painter = QPainter(self)
        metrics = self.fontMetrics()
        if not self.isEnabled():
            painter.setPen(self.palette().color(self.palette().ColorGroup.Disabled,
                                                self.palette().ColorRole.WindowText))
        else:
            painter.setPen(self.palette().color(self.palette().ColorRole.WindowText))
        y = 1
        modes = self._elide if isinstance(self._elide, (list, tuple)) else [self._elide] * self._lines
        for line, mode in zip(self._text.split("\n")[:self._lines], modes):
            shown = metrics.elidedText(line, mode, self.width())
            painter.drawText(0, y, self.width(), metrics.lineSpacing(),
                             int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), shown)
            y += metrics.lineSpacing()


class MessageEdit(QPlainTextEdit):
    """A message box that sends on Ctrl+Enter. It claims the key before the window's
    shortcuts see it (ShortcutOverride), so the window-wide Convert shortcut on the same
    key neither fires nor turns into an "Ambiguous shortcut overload"."""

    send_requested = Signal()

    @staticmethod
    def _is_send(event) -> bool:
        return event.key() in SEND_KEYS and event.modifiers() & Qt.KeyboardModifier.ControlModifier

    def event(self, event):
        if event.type() == QEvent.Type.ShortcutOverride and self._is_send(event):
            event.accept()
            return True
        return super().event(event)

    def keyPressEvent(self, event):
        if self._is_send(event):
            self.send_requested.emit()
            return
        super().keyPressEvent(event)
