"""Panels that land separately (chat, evaluation): imported on first use, a placeholder if missing."""

from __future__ import annotations

import importlib

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QStackedLayout, QWidget


class LazyPanel(QWidget):
    """Holds a placeholder until `widget()` is first asked for, then the real panel
    (or a sentence saying why it is not available)."""

    def __init__(self, module: str, cls: str, title: str, parent=None):
        super().__init__(parent)
        self._module, self._cls, self._title = module, cls, title
        self._widget = None
        self.error: str | None = None
        self._stack = QStackedLayout(self)
        self._placeholder = QLabel(f"{title} opens here.")
        self._placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._placeholder.setWordWrap(True)
        self._stack.addWidget(self._placeholder)

    @property
    def loaded(self):
        return self._widget

    def widget(self):
        if self._widget is None and self.error is None:
            try:
                module = importlib.import_module(self._module)
                self._widget = getattr(module, self._cls)()
            except Exception as exc:  # noqa: BLE001 - a missing optional panel must not stop the window
                self.error = f"{self._title} is not available in this build ({type(exc).__name__}: {exc})."
                self._placeholder.setText(self.error)
                return None
            self._stack.addWidget(self._widget)
            self._stack.setCurrentWidget(self._widget)
        return self._widget

    def shutdown(self) -> None:
        if self._widget is not None and hasattr(self._widget, "shutdown"):
            self._widget.shutdown()
