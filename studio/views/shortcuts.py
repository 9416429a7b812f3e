"""The window's key bindings, each key listed once.

`QKeySequence.StandardKey` expands per platform: Redo is Ctrl+Shift+Z alone on
X11 but Ctrl+Y, Alt+Shift+Backspace and Ctrl+Shift+Z elsewhere, and Quit is
empty on some platforms. Listing a key the standard binding already holds
registers it twice on one action, and Qt then answers "Ambiguous shortcut
overload" and does nothing. `keys()` merges the lists and drops repeats.
These are functions because the standard bindings exist only once there is
an application.
"""

from __future__ import annotations

from PySide6.QtGui import QKeySequence

Std = QKeySequence.StandardKey


def keys(*items) -> list[QKeySequence]:
    """Key sequences from standard keys and strings, in order, each once."""
    out: list[QKeySequence] = []
    seen: set[str] = set()
    for item in items:
        sequences = QKeySequence.keyBindings(item) if isinstance(item, Std) else [QKeySequence(item)]
        for sequence in sequences:
            text = sequence.toString(QKeySequence.SequenceFormat.PortableText)
            if text and text not in seen:
                seen.add(text)
                out.append(sequence)
    return out


def undo() -> list[QKeySequence]:
    return keys(Std.Undo, "Ctrl+Z")


def redo() -> list[QKeySequence]:
    return keys(Std.Redo, "Ctrl+Shift+Z", "Ctrl+Y")


def quit_app() -> list[QKeySequence]:
    return keys(Std.Quit, "Ctrl+Q")


def convert() -> list[QKeySequence]:
    return keys("Ctrl+Return", "Ctrl+Enter")


def next_tab() -> list[QKeySequence]:
    return keys("Ctrl+Tab", "Ctrl+PgDown")


def previous_tab() -> list[QKeySequence]:
    return keys("Ctrl+Shift+Tab", "Ctrl+Backtab", "Ctrl+PgUp")


def label(sequences: list[QKeySequence]) -> str:
    """The first binding as the user's platform writes it, for tooltips."""
    return sequences[0].toString(QKeySequence.SequenceFormat.NativeText) if sequences else ""


def listing(actions) -> list[tuple[str, str]]:
    """(what, keys) for every action with a key, as its menu names it and the platform writes the
    keys; in the actions' order, each once. Help > Keyboard shortcuts shows this, so the list is
    the bindings the window really has."""
    rows: dict[str, list[str]] = {}
    for action in actions:
        what = action.text().replace("&&", "\0").replace("&", "").replace("\0", "&").rstrip("…").strip()
        for key in action.shortcuts():
            text = key.toString(QKeySequence.SequenceFormat.NativeText)
            if what and text and text not in rows.setdefault(what, []):
                rows[what].append(text)
    return [(what, ", ".join(keys)) for what, keys in rows.items() if keys]
