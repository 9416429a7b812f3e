"""Light and dark themes: the one the user chose (settings.THEME), or the system's colour
scheme (QStyleHints.colorScheme), followed as it changes."""

from __future__ import annotations


from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

from studio import settings
from studio.views.icons import clear_cache
from studio.core.bundled import resource


def dark_palette() -> QPalette:
    p = QPalette()
    colours = {
        QPalette.ColorRole.Window: "#2B2D30", QPalette.ColorRole.WindowText: "#E6E6E6",
        QPalette.ColorRole.Base: "#1F2023", QPalette.ColorRole.AlternateBase: "#2A2B2E",
        QPalette.ColorRole.Text: "#E6E6E6", QPalette.ColorRole.Button: "#35373B",
        QPalette.ColorRole.ButtonText: "#E6E6E6", QPalette.ColorRole.Highlight: "#3A8FC9",
        QPalette.ColorRole.HighlightedText: "#FFFFFF", QPalette.ColorRole.ToolTipBase: "#35373B",
        QPalette.ColorRole.ToolTipText: "#E6E6E6", QPalette.ColorRole.PlaceholderText: "#8C8C8C",
        QPalette.ColorRole.Link: "#56B4E9", QPalette.ColorRole.Mid: "#44464A",
    }
    for role, colour in colours.items():
        p.setColor(role, QColor(colour))
    p.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.WindowText, QColor("#8C8C8C"))
    p.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, QColor("#8C8C8C"))
    p.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText, QColor("#8C8C8C"))
    return p


def light_palette() -> QPalette:
    p = QApplication.style().standardPalette()
    p.setColor(QPalette.ColorRole.Highlight, QColor("#0072B2"))
    return p


def system_is_dark() -> bool:
    hints = QGuiApplication.styleHints()
    return hints.colorScheme() == Qt.ColorScheme.Dark


def apply_theme(app: QApplication, dark: bool | None = None) -> bool:
    """Fusion with a light or dark palette and the studio's style sheet; returns whether dark."""
    app.setStyle("Fusion")
    dark = system_is_dark() if dark is None else dark
    app.setPalette(dark_palette() if dark else light_palette())
    sheet = resource("style", "studio.qss")
    try:
        app.setStyleSheet(sheet.read_text())
    except OSError:
        pass
    clear_cache()
    return dark


def apply_chosen_theme(app: QApplication) -> bool:
    """The theme settings.THEME names ("system" follows the system); returns whether dark."""
    chosen = settings.get(settings.THEME)
    return apply_theme(app, None if chosen not in ("light", "dark") else chosen == "dark")


def follow_system(app: QApplication) -> None:
    """Re-apply the theme when the system's colour scheme changes (it matters only under "system")."""
    app.styleHints().colorSchemeChanged.connect(lambda _: apply_chosen_theme(app))
