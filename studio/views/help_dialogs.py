"""Help > About, Help > Keyboard shortcuts and File > Settings: small non-blocking dialogs.

The shortcut list is made from the window's own QActions (views/shortcuts.listing), so it
always shows the keys that are bound. Settings writes each choice at once (settings.py
declares the keys) and applies the theme as it is picked.
"""

from __future__ import annotations

from importlib import metadata

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QApplication, QComboBox, QDialog, QDialogButtonBox, QFormLayout,
                               QHeaderView, QLabel, QMessageBox, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from studio import __version__, settings
from studio.views import shortcuts
from studio.views.theme import apply_chosen_theme


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def about_box(parent: QWidget) -> QMessageBox:
    from PySide6 import __version__ as pyside

    box = QMessageBox(QMessageBox.Icon.NoIcon, "About Config-I Studio",
                      f"<h3>Config-I Studio {__version__}</h3>"
                      "<p>Quantize Mixture-of-Experts language models to MLX with a role-aware bit policy: "
                      "see every tensor by role and layer, paint bits, watch the exact size, convert, "
                      "evaluate and chat with the result.</p>"
                      f"<p>MLX {_version('mlx')} · mlx-lm {_version('mlx-lm')} · PySide6 {pyside}</p>"
                      "<p>Everything the window does also works headless: <code>configi-studio --help</code>.</p>",
                      QMessageBox.StandardButton.Close, parent)
    box.setTextFormat(Qt.TextFormat.RichText)
    box.setIconPixmap(parent.windowIcon().pixmap(64, 64))
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.open()
    return box


class ShortcutsDialog(QDialog):
    def __init__(self, actions, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        rows = shortcuts.listing(actions)
        self.table = QTableWidget(len(rows), 2)
        self.table.setHorizontalHeaderLabels(["Action", "Keys"])
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        for row, (what, keys) in enumerate(rows):
            self.table.setItem(row, 0, QTableWidgetItem(what))
            self.table.setItem(row, 1, QTableWidgetItem(keys))
        note = QLabel("In the policy grid: arrows move, Shift+arrows select a block, Space paints with the "
                      "brush, the Menu key sets a whole row or column.", wordWrap=True)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addWidget(note)
        layout.addWidget(close)
        self.resize(540, min(720, 140 + (self.fontMetrics().height() + 8) * len(rows)))

    def rows(self) -> list[tuple[str, str]]:
        return [(self.table.item(r, 0).text(), self.table.item(r, 1).text()) for r in range(self.table.rowCount())]


class SettingsDialog(QDialog):
    THEME_LABELS = {"system": "Follow the system", "light": "Light", "dark": "Dark"}

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.theme = QComboBox()
        for key in settings.THEMES:
            self.theme.addItem(self.THEME_LABELS[key], key)
        self.theme.setCurrentIndex(max(0, self.theme.findData(settings.get(settings.THEME))))
        self.theme.currentIndexChanged.connect(self._theme_chosen)
        form = QFormLayout()
        form.addRow("Theme:", self.theme)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(close)

    def _theme_chosen(self) -> None:
        settings.put(settings.THEME, self.theme.currentData())
        app = QApplication.instance()
        if app is not None:
            apply_chosen_theme(app)
