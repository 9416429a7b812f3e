"""Colours: the role palette from studio.core.model.roles and a sequential palette by bits.

Bits use the viridis ramp (perceptually ordered and colour-blind safe): few bits
dark, many bits light. Kept floats are greys, drop is near-black with a marker.
"""

from __future__ import annotations

from functools import lru_cache

from PySide6.QtGui import QColor, QIcon, QPixmap

from studio.core.defaults import default_group_size
from studio.core.policy.bit_policy import Drop, Keep, Quantize
from studio.core.model.roles import ROLE_BY_KEY

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
        if action.group_size != default_group_size(action.mode):
            text += f"/{action.group_size}"
        return text
    if isinstance(action, Keep):
        return {"source": "keep", "bfloat16": "bf16", "float16": "f16", "float32": "f32"}[action.dtype]
    if isinstance(action, Drop):
        return "drop"
    return ""


_ICONS: dict[str, QIcon] = {}


def role_icon(role: str, size: int = 10) -> QIcon:
    """A small square swatch of the role's colour."""
    key = f"{role}/{size}"
    if key not in _ICONS:
        pixmap = QPixmap(size, size)
        pixmap.fill(role_colour(role))
        _ICONS[key] = QIcon(pixmap)
    return _ICONS[key]


def swatch_icon(colour: QColor, size: int = 12) -> QIcon:
    """A square of `colour` with a thin grey edge (menus, legends)."""
    key = f"swatch/{colour.name(QColor.NameFormat.HexArgb)}/{size}"
    if key not in _ICONS:
        from PySide6.QtGui import QPainter

        pixmap = QPixmap(size, size)
        pixmap.fill(colour)
        painter = QPainter(pixmap)
        painter.setPen(QColor("#808080"))
        painter.drawRect(0, 0, size - 1, size - 1)
        painter.end()
        _ICONS[key] = QIcon(pixmap)
    return _ICONS[key]


# Quantization error: ColorBrewer YlOrRd (sequential, lightness falls steadily, colour-blind
# safe), deliberately unlike the viridis bits ramp so the two modes are never confused.
# Stops sit where real weights land with affine quantization (relative Frobenius error
# ||dequantize(quantize(W)) - W|| / ||W||): 8-bit is about 0.5% (pale, calm), 4-bit 5-10%
# (orange), 2-bit 30-50% (dark red, alarming). Between stops the colour follows log(error).
ERROR_STOPS = ((0.002, "#FFFFCC"), (0.01, "#FFEDA0"), (0.03, "#FED976"), (0.07, "#FEB24C"),
               (0.12, "#FD8D3C"), (0.20, "#FC4E2A"), (0.30, "#E31A1C"), (0.45, "#800026"))
NO_ERROR_COLOUR = "#D9D9D9"
# What the legend shows: a few errors and the bit widths that typically give them.
ERROR_LEGEND = ((0.005, "8-bit"), (0.02, "6-bit"), (0.07, "4-bit"), (0.15, "3-bit"), (0.40, "2-bit"))
TYPICAL_ERROR = {8: "about 0.5%", 6: "1.5-2%", 5: "about 3%", 4: "5-10%", 3: "12-20%", 2: "30-50%"}
ERROR_SCALE_TIP = ("Relative error ||dequantize(quantize(W)) - W|| / ||W|| of each cell at its current bits, "
                   "element-weighted over the cell's tensors.\n"
                   "Typical for affine quantization of trained weights: 8-bit about 0.5%, 6-bit 1.5-2%, "
                   "4-bit 5-10%, 3-bit 12-20%, 2-bit 30-50%.\n"
                   "Pale yellow reads as near-lossless, orange as the usual 4-bit cost, dark red as damage; "
                   "grey cells are not quantized or not measured.")
SENSITIVITY_SCALE_TIP = ("Output-space sensitivity: the relative error of the decoder layer's output (or the logits, "
                         "for the embedding and head) when this cell alone is quantized to its current bits, "
                         "measured on calibration text, same colour scale as the weight error.\n"
                         "It says which cells matter to the output; \"Fit to budget\" can spend bits by it.")


def error_colour(error: float | None) -> QColor:
    if error is None:
        return qcolor(NO_ERROR_COLOUR)
    import math

    if error <= ERROR_STOPS[0][0]:
        return qcolor(ERROR_STOPS[0][1])
    for (low, a), (high, b) in zip(ERROR_STOPS, ERROR_STOPS[1:]):
        if error <= high:
            t = (math.log(error) - math.log(low)) / (math.log(high) - math.log(low))
            return tint(qcolor(b), qcolor(a), t)
    return qcolor(ERROR_STOPS[-1][1])


def error_legend_html(label: str = "relative error") -> str:
    """Swatches of the error scale, each labelled with its error in percent (as the cells are), for a
    one-line legend."""
    cells = []
    for error, _bits in ERROR_LEGEND:
        colour = error_colour(error)
        cells.append(f"<span style='background-color:{colour.name()}; color:{text_on(colour).name()}'>"
                     f"&nbsp;{error_text(error, sign=False)}&nbsp;</span>")
    return f"{label}, %: " + "".join(cells)


def error_text(error: float | None, sign: bool = True) -> str:
    """A relative error in percent, one format everywhere and never in scientific notation: 0.35 ->
    "35%", 0.041 -> "4.1%", 0.0047 -> "0.47%", below 0.005% "<0.01%". Without `sign` (grid cells,
    whose legend says "%") the number alone."""
    if error is None:
        return "–"
    percent = 100 * error
    if percent >= 9.95:
        text = f"{percent:.0f}"
    elif percent >= 0.995:
        text = f"{percent:.1f}"
    elif percent >= 0.005:
        text = f"{percent:.2f}"
    else:
        text = "<0.01"
    return text + "%" if sign else text
