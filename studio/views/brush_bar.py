"""The brush bar: pick what a stroke paints (keys 2-8, K keep, F f16, D drop; S or Esc to select)
and the group size and mode of painted quantize values. The chosen brush is drawn thick (the
editor names it in words on the line below), so it reads at a glance."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QFont, QFontMetrics, QKeySequence
from PySide6.QtWidgets import QButtonGroup, QComboBox, QHBoxLayout, QLabel, QToolButton, QWidget

from studio import settings
from studio.core.defaults import AFFINE_BITS, DEFAULT_GROUP_SIZE, MODES
from studio.core.policy.bit_policy import Drop, Keep, Quantize
from studio.views.palette import action_colour, text_on

# (label, key, tool): tool is bits for a quantize brush, a Keep/Drop action, or None for select.
TOOLS = (("select", "S", None), *((str(b), str(b), b) for b in AFFINE_BITS),
         ("keep", "K", Keep()), ("f16", "F", Keep("float16")), ("drop", "D", Drop()))


def action_for(tool, group_size: int, mode: str):
    """The policy action a tool paints under the chosen group size and mode (None: select)."""
    if isinstance(tool, int):
        if mode == "affine":
            return Quantize(tool, group_size, "affine")
        return Quantize(MODES[mode]["bits"][0], MODES[mode]["group_sizes"][0], mode)
    return tool


def _tool_tip(key, tool) -> str:
    if tool is None:
        return f"Select: click a cell to show its tensors ({key} or Esc)"
    if isinstance(tool, int):
        return f"Paint {tool}-bit quantization (key {key})"
    return f"Paint {tool.label()} (key {key})"


def _button_style(tool) -> str:
    """Colour swatch buttons; the chosen one framed thick in the text colour, the focused one dashed."""
    base = "border: 1px solid #777; border-radius: 3px; padding: 2px 6px;"
    if tool is not None:
        colour = action_colour(action_for(tool, DEFAULT_GROUP_SIZE, "affine"))
        base = f"background: {colour.name()}; color: {text_on(colour).name()}; " + base
    return (f"QToolButton {{ {base} }}"
            " QToolButton:checked { border: 3px solid palette(text); font-weight: bold; padding: 0px 4px; }"
            " QToolButton:focus { outline: none; border: 2px dashed palette(highlight); }"
            " QToolButton:checked:focus { border: 3px dashed palette(highlight); }")


class BrushBar(QWidget):
    brush_changed = Signal(object)  # the Action a stroke paints, or None for select

    def __init__(self, parent=None):
        super().__init__(parent)
        self.tools = QButtonGroup(self)
        self.tools.setExclusive(True)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(2)
        row.addWidget(QLabel("Brush:"))
        self.key_actions: list[QAction] = []  # the owner adds them, so the keys work wherever it has focus
        for i, (label, key, tool) in enumerate(TOOLS):
            button = QToolButton(text=label, checkable=True, autoRaise=False, toolTip=_tool_tip(key, tool))
            bold = QFont(button.font())
            bold.setBold(True)  # the chosen brush is bold: room for that, so "select" is never cut
            button.setMinimumWidth(QFontMetrics(bold).horizontalAdvance(label) + 18)
            button.setStyleSheet(_button_style(tool))
            self.tools.addButton(button, i)
            row.addWidget(button)
            self._key_action(QKeySequence(key), button)
        self._key_action(QKeySequence(Qt.Key.Key_Escape), self.tools.button(0))
        self.tools.idClicked.connect(lambda _: self._update())
        self.group_size = QComboBox(toolTip="Group size of painted quantize values")
        self.mode = QComboBox(toolTip="Quantization mode of painted values (mx/nv modes fix the bits)")
        for mode in MODES:
            self.mode.addItem(mode, mode)
        self.mode.currentIndexChanged.connect(self._mode_changed)
        self.group_size.currentIndexChanged.connect(lambda _: self._update())
        row.addSpacing(10)
        row.addWidget(QLabel("Group:"))
        row.addWidget(self.group_size)
        row.addWidget(QLabel("Mode:"))
        row.addWidget(self.mode)
        row.addStretch(1)

        self.mode.setCurrentIndex(max(0, self.mode.findData(settings.get(settings.PAINT_MODE))))
        self._mode_changed()
        self.group_size.setCurrentIndex(max(0, self.group_size.findData(settings.get(settings.PAINT_GROUP_SIZE))))
        self.tools.button(0).setChecked(True)
        self._update()

    def _key_action(self, sequence: QKeySequence, button: QToolButton) -> None:
        action = QAction(f"Brush: {button.text()}", self, shortcut=sequence)  # named in Help > Keyboard shortcuts
        action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        action.triggered.connect(lambda _=False, b=button: b.click())
        self.key_actions.append(action)

    def action(self, tool):
        """What `tool` paints with the group size and mode chosen now."""
        return action_for(tool, self.group_size.currentData() or DEFAULT_GROUP_SIZE, self.mode.currentData())

    def brush(self):
        tool_id = self.tools.checkedId()
        tool = TOOLS[tool_id][2] if tool_id >= 0 else None
        return None if tool is None else self.action(tool)

    def paint_actions(self) -> list:
        """Every action a brush can paint now (the header menu offers them)."""
        return [self.action(tool) for _, _, tool in TOOLS[1:]]

    def set_brush(self, key: str) -> None:
        """Choose a brush by its key ("2".."8", "K", "F", "D", "S")."""
        for i, (_, tool_key, _) in enumerate(TOOLS):
            if tool_key == key.upper():
                self.tools.button(i).click()
                return
        raise KeyError(key)

    def _mode_changed(self) -> None:
        mode = self.mode.currentData()
        current = self.group_size.currentData()
        self.group_size.blockSignals(True)
        self.group_size.clear()
        for size in MODES[mode]["group_sizes"]:
            self.group_size.addItem(str(size), size)
        self.group_size.setCurrentIndex(max(0, self.group_size.findData(current if current else DEFAULT_GROUP_SIZE)))
        self.group_size.blockSignals(False)
        self._update()

    def _update(self) -> None:
        brush = self.brush()
        settings.put(settings.PAINT_MODE, self.mode.currentData())
        settings.put(settings.PAINT_GROUP_SIZE, self.group_size.currentData() or DEFAULT_GROUP_SIZE)
        self.brush_changed.emit(brush)
