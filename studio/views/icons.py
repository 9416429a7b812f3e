"""Icons: small SVGs in resources/icons, drawn in the palette's text colour so
they read in light and dark themes."""

from __future__ import annotations


from PySide6.QtCore import QByteArray, Qt
from PySide6.QtGui import QGuiApplication, QIcon, QPainter, QPalette, QPixmap
from PySide6.QtSvg import QSvgRenderer
from studio.core.bundled import resource

_STROKE = "#333333"
_CACHE: dict[tuple[str, str], QIcon] = {}


def _svg(name: str) -> bytes:
    return resource("icons", f"{name}.svg").read_bytes()


def icon(name: str, colour: str | None = None) -> QIcon:
    if colour is None:
        app = QGuiApplication.instance()
        colour = app.palette().color(QPalette.ColorRole.WindowText).name() if app else _STROKE
    key = (name, colour)
    if key not in _CACHE:
        try:
            data = _svg(name).replace(_STROKE.encode(), colour.encode())
        except OSError:
            return QIcon()
        renderer = QSvgRenderer(QByteArray(data))
        result = QIcon()
        for size in (16, 24, 32, 48):
            pixmap = QPixmap(size, size)
            pixmap.fill(Qt.GlobalColor.transparent)
            painter = QPainter(pixmap)
            renderer.render(painter)
            painter.end()
            result.addPixmap(pixmap)
        _CACHE[key] = result
    return _CACHE[key]


def clear_cache() -> None:
    """Forget drawn icons (after a theme change)."""
    _CACHE.clear()
