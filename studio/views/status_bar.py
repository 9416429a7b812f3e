"""The window's status bar: the open model on the left, the policy's name on the right, and
temporary messages ("Converted to …") in the model's place, cut with "…" before the policy.

QStatusBar draws a temporary message itself, across the bar up to its permanent widgets,
and a long one runs into the permanent text. Here the bar draws no message: it shows it in
a label of its own that takes the model line's room and elides, with the whole text as its
tooltip. `showMessage`, `currentMessage` and the timeout stay QStatusBar's own.
"""

from __future__ import annotations

from PySide6.QtGui import QPainter
from PySide6.QtWidgets import QFrame, QLabel, QStatusBar, QStyle, QStyleOption

from studio.views.widgets import ElidedLabel

GAP = 12  # px between the message or model line and the policy's name


class StatusBar(QStatusBar):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.model_label = ElidedLabel()
        self.message_label = ElidedLabel()
        self.message_label.setVisible(False)
        self.policy_label = QLabel()
        separator = QFrame(frameShape=QFrame.Shape.VLine, frameShadow=QFrame.Shadow.Sunken)
        # All permanent: QStatusBar hides its other widgets while a message shows, and these
        # hide and show themselves instead.
        self.addPermanentWidget(self.model_label, 1)
        self.addPermanentWidget(self.message_label, 1)
        self.addPermanentWidget(separator)
        self.addPermanentWidget(self.policy_label)
        self.layout().setSpacing(GAP // 2)
        self.messageChanged.connect(self._show_message)

    def _show_message(self, text: str) -> None:
        self.message_label.setText(text)
        self.message_label.setVisible(bool(text))
        self.model_label.setVisible(not text)

    def paintEvent(self, event):
        """The panel and nothing else: the message is in `message_label`."""
        painter = QPainter(self)
        option = QStyleOption()
        option.initFrom(self)
        self.style().drawPrimitive(QStyle.PrimitiveElement.PE_PanelStatusBar, option, painter, self)
