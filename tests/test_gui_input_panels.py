"""The panels driven by a person's keyboard and mouse (tests/real_input.py: xdotool under xcb).

Issue 18: Clear during a chat reply, the Fit dialog's Apply and Cancel.
"""

from __future__ import annotations

import pytest

import real_input as person
from studio.core.runtime.generation import SamplingParams
from test_gui_fixtures import open_window, studio_settings, tiny_m3  # noqa: F401

WAIT_MS = 60_000
pytestmark = pytest.mark.qt_log_ignore(r"does not support raise\(\)", "does not support grabbing the keyboard")


def test_clear_clicked_while_a_reply_streams_empties_the_chat(qtbot, tiny_m3):
    window = open_window(qtbot, tiny_m3, size=(1280, 800))
    try:
        pane = window.chat
        window.tabs.setCurrentWidget(pane)
        with qtbot.waitSignal(pane.model_loaded, timeout=WAIT_MS):
            pane.open_model(tiny_m3)
        pane.sampling.set_params(SamplingParams(temperature=0.0, max_tokens=100000))
        person.activate(window)
        person.click(pane.input)
        person.type_text("hello")
        with qtbot.waitSignal(pane._host.chunk, timeout=WAIT_MS):
            person.click(pane.send_button)
        clear = next(b for b in pane.findChildren(type(pane.send_button)) if b.text() == "Clear")
        person.click(clear)
        qtbot.waitUntil(lambda: not pane.busy)
        assert pane.conversation().turns == [] and "hello" not in pane.compare_view.views[0].toPlainText()
        qtbot.wait(300)  # what the stopped reply still sends is dropped
        assert pane.conversation().turns == [] and pane.send_button.isEnabled()
    finally:
        window.shutdown()


def test_fit_dialog_cancel_changes_nothing_and_apply_applies(qtbot, tiny_m3):
    window = open_window(qtbot, tiny_m3, size=(1280, 800))
    try:
        editor, c = window.editor, window.controller
        before = c.project.estimate.total_bytes
        dialog = editor.open_fit_dialog()
        qtbot.waitExposed(dialog)
        dialog.by_size.setChecked(True)
        dialog.size.setValue(0.8 * before / dialog.unit_bytes)
        person.click(dialog.propose_button)
        qtbot.waitUntil(lambda: dialog.accept_button.isEnabled(), timeout=WAIT_MS)
        person.key("Escape")
        qtbot.waitUntil(lambda: not dialog.isVisible())
        c.flush()
        assert c.project.estimate.total_bytes == before and c.undo_stack.count() == 0

        dialog = editor.open_fit_dialog()
        qtbot.waitExposed(dialog)
        dialog.by_size.setChecked(True)
        dialog.size.setValue(0.8 * before / dialog.unit_bytes)
        person.click(dialog.propose_button)  # the survey is reused: the proposal is at once
        qtbot.waitUntil(lambda: dialog.accept_button.isEnabled(), timeout=WAIT_MS)
        assert dialog.accept_button.text() == "Apply"
        person.click(dialog.accept_button)
        qtbot.waitUntil(lambda: not dialog.isVisible())
        c.flush()
        assert c.project.estimate.total_bytes < before and c.undo_stack.text(0) == "fit to budget"
    finally:
        window.shutdown()
