"""Colours: the role palette from studio.core.roles and a sequential palette by bits.

Bits use the viridis ramp (perceptually ordered and colour-blind safe): few bits
dark, many bits light. Kept floats are greys, drop is near-black with a marker.
"""

from __future__ import annotations

from functools import lru_cache

from PySide6.QtGui import QColor, QIcon, QPalette, QPixmap

from studio.core.policy import Drop, Keep, Quantize
from studio.core.roles import ROLE_BY_KEY

BITS_COLOURS = {2: "#440154", 3: "#3B528B", 4: "#21918C", 5: "#5EC962", 6: "#ADDC30", 8: "#FDE725"}
KEEP_COLOURS = {"source": "#E6E6E6", "bfloat16": "#CFCFCF", "float16": "#B8B8B8", "float32": "#A0A0A0"}
DROP_COLOUR = "#2B2B2B"
EMPTY_COLOUR = "#00000000"


@lru_cache(maxsize=None)
def qcolor(spec: str) -> QColor:
    return QColor(spec)


def role_colour(role: str) -> QColor:
    return qcolor(ROLE_BY_KEY[role].colour if role in ROLE_BY_KEY else "#BBBBBB")


def tint(colour: QColor, base: QColor, amount: float) -> QColor:
    """`colour` mixed into `base`: amount 0 is base, 1 is colour."""
    return QColor.fromRgbF(base.redF() + (colour.redF() - base.redF()) * amount,
                           base.greenF() + (colour.greenF() - base.greenF()) * amount,
                           base.blueF() + (colour.blueF() - base.blueF()) * amount)


def action_colour(action) -> QColor:
    if isinstance(action, Quantize):
        return qcolor(BITS_COLOURS.get(action.bits, "#21918C"))
    if isinstance(action, Keep):
        return qcolor(KEEP_COLOURS[action.dtype])
    if isinstance(action, Drop):
        return qcolor(DROP_COLOUR)
    return qcolor(EMPTY_COLOUR)


def text_on(background: QColor) -> QColor:
    """Black or white, whichever reads better on `background`."""
    luminance = 0.2126 * background.redF() + 0.7152 * background.greenF() + 0.0722 * background.blueF()
    return qcolor("#000000") if luminance > 0.5 else qcolor("#FFFFFF")


def action_short(action) -> str:
    """The few characters a grid cell shows."""
    if isinstance(action, Quantize):
        text = str(action.bits)
        if action.mode != "affine":
            text = {"mxfp4": "mx4", "nvfp4": "nv4", "mxfp8": "mx8"}.get(action.mode, action.mode)
        if action.group_size != {"affine": 64}.get(action.mode, action.group_size):
            text += f"/{action.group_size}"
        return text
    if isinstance(action, Keep):
        return {"source": "keep", "bfloat16": "bf16", "float16": "f16", "float32": "f32"}[action.dtype]
    if isinstance(action, Drop):
        return "drop"
    return ""


def is_dark(palette: QPalette) -> bool:
    return palette.color(QPalette.ColorRole.Window).lightnessF() < 0.5


_ICONS: dict[str, QIcon] = {}


def role_icon(role: str, size: int = 10) -> QIcon:
    """A small square swatch of the role's colour."""
    key = f"{role}/{size}"
    if key not in _ICONS:
        pixmap = QPixmap(size, size)
        pixmap.fill(role_colour(role))
        _ICONS[key] = QIcon(pixmap)
    return _ICONS[key]


# Quantization error, on a log scale: ColorBrewer YlOrRd (sequential, colour-blind
# safe), deliberately unlike the viridis bits ramp so the two modes are never confused.
ERROR_RAMP = ("#FFFFCC", "#FED976", "#FD8D3C", "#E31A1C", "#800026")
ERROR_RANGE = (1e-3, 0.5)  # relative errors at the two ends of the ramp
NO_ERROR_COLOUR = "#D9D9D9"


def error_colour(error: float | None) -> QColor:
    if error is None:
        return qcolor(NO_ERROR_COLOUR)
    import math

    low, high = (math.log10(v) for v in ERROR_RANGE)
    t = (math.log10(max(error, 1e-12)) - low) / (high - low)
    t = min(max(t, 0.0), 1.0) * (len(ERROR_RAMP) - 1)
    i = min(int(t), len(ERROR_RAMP) - 2)
    return tint(qcolor(ERROR_RAMP[i + 1]), qcolor(ERROR_RAMP[i]), t - i)


def error_text(error: float | None) -> str:
    """A relative error in the few characters a cell has: 0.0412 -> "4.1%"."""
    if error is None:
        return "–"
    percent = 100 * error
    return f"{percent:.2g}%" if percent < 100 else f"{percent:.0f}%"
