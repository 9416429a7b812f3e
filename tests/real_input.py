"""A person's keyboard and mouse for the GUI tests: real X input under xcb, Qt's test events offscreen.

Under `QT_QPA_PLATFORM=xcb` (CI runs every tests/test_gui_input_*.py under
Xvfb) keys and clicks go through xdotool, which sends them with the XTEST
extension as a keyboard and a mouse would: the X server picks the window under
the pointer or with the focus, and Qt's own routing (shortcut map, menus,
popups, modal boxes) does the rest. Offscreen there is no X server; the same
calls then send QTest events to where Qt would route a real key (the open
popup menu, else the focused widget of the active window) or to the widget
under the point, so one test drives the same path on both platforms.

Keys are named as xdotool names them: "ctrl+o", "alt+f", "Return", "Escape",
"Down", "space", "3".
"""

from __future__ import annotations

import os
import shutil
import subprocess

from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QWidget

REAL = os.environ.get("QT_QPA_PLATFORM", "").startswith("xcb") and shutil.which("xdotool") is not None
SETTLE_MS = 60  # time for the X server's events to reach Qt and be handled

_MODIFIERS = {"ctrl": Qt.KeyboardModifier.ControlModifier, "shift": Qt.KeyboardModifier.ShiftModifier,
              "alt": Qt.KeyboardModifier.AltModifier, "super": Qt.KeyboardModifier.MetaModifier}
_KEYS = {"Return": Qt.Key.Key_Return, "KP_Enter": Qt.Key.Key_Enter, "Escape": Qt.Key.Key_Escape,
         "Tab": Qt.Key.Key_Tab, "BackSpace": Qt.Key.Key_Backspace, "Delete": Qt.Key.Key_Delete,
         "space": Qt.Key.Key_Space, "Up": Qt.Key.Key_Up, "Down": Qt.Key.Key_Down, "Left": Qt.Key.Key_Left,
         "Right": Qt.Key.Key_Right, "Home": Qt.Key.Key_Home, "End": Qt.Key.Key_End,
         "Next": Qt.Key.Key_PageDown, "Prior": Qt.Key.Key_PageUp, "Menu": Qt.Key.Key_Menu,
         "F1": Qt.Key.Key_F1}


def _xdotool(*args: str) -> None:
    subprocess.run(["xdotool", *args], check=True, timeout=10)


def settle(ms: int = SETTLE_MS) -> None:
    QTest.qWait(ms)


def wait_until(condition, timeout_ms: int = 15000) -> None:
    waited = 0
    while not condition():
        assert waited < timeout_ms, "timed out waiting for the window"
        QTest.qWait(10)
        waited += 10


def _parse(combo: str) -> tuple[Qt.Key, Qt.KeyboardModifier]:
    *mods, name = combo.split("+")
    modifiers = Qt.KeyboardModifier.NoModifier
    for mod in mods:
        modifiers |= _MODIFIERS[mod.lower()]
    if name in _KEYS:
        return _KEYS[name], modifiers
    if len(name) == 1:
        return Qt.Key(ord(name.upper())), modifiers
    raise ValueError(f"no Qt key for {name!r}")


def _key_target() -> QWidget | None:
    """Where Qt routes a key: the open popup (a menu), else the focus of the active (modal) window."""
    popup = QApplication.activePopupWidget()
    if popup is not None:
        return popup
    focus = QApplication.focusWidget()
    if focus is not None:
        return focus
    return QApplication.activeModalWidget() or QApplication.activeWindow()


def activate(window: QWidget) -> None:
    """Give `window` the keyboard focus, as clicking its title bar would."""
    window.activateWindow()
    if REAL:
        window.raise_()  # (the offscreen plugin cannot raise and warns)
        _xdotool("windowfocus", "--sync", str(int(window.winId())))  # Xvfb has no window manager to activate it
    wait_until(lambda: QApplication.activeWindow() is window)
    settle()


def key(combo: str) -> None:
    """Press and release a key combination, e.g. "ctrl+o", "alt+f", "Return"."""
    if REAL:
        _xdotool("key", "--clearmodifiers", combo)
    else:
        target = _key_target()
        assert target is not None, f"no widget would receive {combo}"
        qt_key, modifiers = _parse(combo)
        QTest.keyClick(target, qt_key, modifiers)
    settle()


def type_text(text: str) -> None:
    """Type `text` into whatever has the keyboard focus."""
    if REAL:
        _xdotool("type", "--delay", "8", text)
    else:
        target = _key_target()
        assert target is not None, f"no widget would receive {text!r}"
        QTest.keyClicks(target, text)
    settle()


def click(widget: QWidget, pos: QPoint | None = None, button: str = "left") -> None:
    """Move the pointer to `pos` in `widget` (its centre by default) and click there."""
    pos = widget.rect().center() if pos is None else pos
    if REAL:
        at = widget.mapToGlobal(pos)
        _xdotool("mousemove", str(at.x()), str(at.y()))
        _xdotool("click", {"left": "1", "middle": "2", "right": "3"}[button])
    else:
        qt_button = {"left": Qt.MouseButton.LeftButton, "middle": Qt.MouseButton.MiddleButton,
                     "right": Qt.MouseButton.RightButton}[button]
        QTest.mouseClick(widget, qt_button, Qt.KeyboardModifier.NoModifier, pos)
    settle()


def drag(widget: QWidget, start: QPoint, end: QPoint) -> None:
    """Press at `start`, move to `end` and release there, in `widget`'s coordinates."""
    if REAL:
        a, b = widget.mapToGlobal(start), widget.mapToGlobal(end)
        _xdotool("mousemove", str(a.x()), str(a.y()))
        _xdotool("mousedown", "1")
        settle(30)
        _xdotool("mousemove", str(b.x()), str(b.y()))
        settle(30)
        _xdotool("mouseup", "1")
    else:
        QTest.mousePress(widget, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
        QTest.mouseMove(widget, end)
        QTest.mouseRelease(widget, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, end)
    settle()


def resize_window(window: QWidget, width: int, height: int) -> None:
    """Resize the top-level window as a window manager would (an X ConfigureWindow request)."""
    if REAL:
        _xdotool("windowsize", "--sync", str(int(window.winId())), str(width), str(height))
    else:
        window.resize(width, height)
    settle(150)
