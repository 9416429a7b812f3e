"""The window driven by a person's keyboard and mouse (tests/real_input.py: xdotool under xcb).

Issue 18: crash recovery of a Hub model, File > Open from the Hub over unsaved
edits, and the window on a small screen.
"""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QApplication, QMessageBox

from studio.views.hub_open import HubOpenDialog

import real_input as person
from test_gui_fixtures import open_window, studio_settings, tiny_m3  # noqa: F401

WAIT_MS = 20_000
# Menus and popups offscreen: the plugin cannot raise windows or grab the keyboard, and says so.
pytestmark = pytest.mark.qt_log_ignore(r"does not support raise\(\)", "does not support grabbing the keyboard")


def _paint_attn_q(window, bits: int = 3, layers=(0, 1, 2)) -> None:
    """Click a cell to focus the grid, press the brush's key, drag down the column."""
    grid, model = window.editor.grid, window.editor.grid_model
    first, last = (grid.visualRect(model.index_of("attn_q", layer)).center() for layer in (layers[0], layers[-1]))
    person.activate(window)
    person.click(grid.viewport(), first)
    person.key(str(bits))
    person.drag(grid.viewport(), first, last)
    assert [model.action("attn_q", layer)[0].bits for layer in layers] == [bits] * len(layers)


def _open_from_the_hub_menu(qtbot, window, ref: str) -> None:
    """File > Open from the Hub… by its mnemonics, type the repo, press Enter."""
    person.activate(window)  # as the window manager does when a dialog closes
    person.key("alt+f")
    person.key("h")
    qtbot.waitUntil(lambda: isinstance(QApplication.activeModalWidget(), HubOpenDialog), timeout=WAIT_MS)
    person.type_text(ref)
    person.key("Return")


def test_open_from_the_hub_asks_before_dropping_unsaved_edits(qtbot, hub, tiny_m3):
    hub.add_folder("org/tiny", tiny_m3)
    window = open_window(qtbot, tiny_m3)
    try:
        _paint_attn_q(window)
        _open_from_the_hub_menu(qtbot, window, "org/tiny")
        qtbot.waitUntil(lambda: window.session.question is not None, timeout=WAIT_MS)
        box = window.session.question
        assert "unsaved edits" in box.text()
        person.click(box.button(QMessageBox.StandardButton.Cancel))
        qtbot.waitUntil(lambda: window.session.question is None, timeout=WAIT_MS)
        assert not window.controller.project.inventory.source.remote  # still the folder, edits kept
        assert window.editor.grid_model.action("attn_q", 1)[0].bits == 3

        _open_from_the_hub_menu(qtbot, window, "org/tiny")
        qtbot.waitUntil(lambda: window.session.question is not None, timeout=WAIT_MS)
        person.click(window.session.question.button(QMessageBox.StandardButton.Discard))
        qtbot.waitUntil(lambda: bool(window.controller.project.inventory.source.remote), timeout=WAIT_MS)
        assert window.controller.project.inventory.source.repo_id == "org/tiny"
        assert window.controller.undo_stack.count() == 0
    finally:
        window.shutdown()


def _hub_model_with_unsaved_edits(qtbot, hub, tiny_m3):
    """The start page's Hub box, typed into and sent with Enter; then a column painted. Returns the window."""
    from studio.views.main_window import MainWindow

    commit = hub.add_folder("org/tiny", tiny_m3)
    window = MainWindow()
    qtbot.addWidget(window)
    window.resize(1200, 760)
    window.show()
    qtbot.waitExposed(window)
    person.activate(window)
    person.click(window.start.hub.repo.lineEdit())
    person.type_text("org/tiny")
    person.key("Return")
    qtbot.waitUntil(lambda: window.controller.project is not None, timeout=WAIT_MS)
    assert window.controller.project.inventory.source.commit == commit
    qtbot.waitUntil(lambda: window.editor.grid.visualRect(window.editor.grid_model.index_of("attn_q", 2)).isValid(), timeout=WAIT_MS)
    _paint_attn_q(window)
    return window, commit


def test_a_crashed_hub_session_starts_again_with_its_edits(qtbot, hub, tiny_m3, monkeypatch):
    from studio.views import app as app_module

    window, commit = _hub_model_with_unsaved_edits(qtbot, hub, tiny_m3)
    window.shutdown()  # the process dies here: no closeEvent, the recovery record stays
    monkeypatch.setattr(app_module, "demo_model_path", lambda: None)
    again = app_module.build_window(None, None)  # `configi-studio` with no argument
    qtbot.addWidget(again)
    try:
        source = again.controller.project.inventory.source
        assert source.remote and source.repo_id == "org/tiny" and source.commit == commit
        assert [again.editor.grid_model.action("attn_q", layer)[0].bits for layer in range(3)] == [3, 3, 3]
        assert "Recovered" in again.statusBar().currentMessage()
        assert again.startup_notice is None
        # The recovered edits are unsaved edits like any other: opening from the Hub asks first.
        again.resize(1200, 760)
        again.show()
        qtbot.waitExposed(again)
        _open_from_the_hub_menu(qtbot, again, "org/tiny")
        qtbot.waitUntil(lambda: again.session.question is not None, timeout=WAIT_MS)
        person.click(again.session.question.button(QMessageBox.StandardButton.Cancel))
        assert again.editor.grid_model.action("attn_q", 1)[0].bits == 3
    finally:
        again.shutdown()


def test_a_recovery_that_cannot_open_never_blocks_the_start(qtbot, hub, tiny_m3):
    from studio import settings
    from studio.core.policy.bit_policy import load_policy_file
    from studio.views import app as app_module

    window, _ = _hub_model_with_unsaved_edits(qtbot, hub, tiny_m3)
    window.shutdown()  # a crash ...
    del hub.repos["org/tiny"]  # ... and the repo is gone from the Hub at the next start
    again = app_module.build_window(None, None)
    qtbot.addWidget(again)
    try:
        assert settings.get(settings.RECOVERY) == ""  # asked once, never again
        qtbot.waitUntil(lambda: again.startup_notice is not None and again.startup_notice.isVisible(), timeout=WAIT_MS)
        text = again.startup_notice.text()
        assert "org/tiny@" in text
        kept = next(settings.rescue_folder().glob("recovered-*.json"))
        assert str(kept) in text
        assert load_policy_file(kept).decide("attn_q", 1, 8)[0].bits == 3  # nothing of the user's lost
        person.click(again.startup_notice.button(QMessageBox.StandardButton.Ok))
        qtbot.waitUntil(lambda: not again.startup_notice.isVisible(), timeout=WAIT_MS)
    finally:
        again.shutdown()


def _on_screen_in(window, widget) -> bool:
    """Whether `widget` is shown and wholly inside the window's client area."""
    if not widget.isVisible() or widget.visibleRegion().isEmpty():
        return False
    top_left = widget.mapTo(window, widget.rect().topLeft())
    return window.rect().contains(top_left) and window.rect().contains(top_left + widget.rect().bottomRight())


def test_the_first_window_fits_the_screen_and_works_at_1024_by_700(qtbot, tiny_m3):
    from PySide6.QtWidgets import QTabBar

    from studio.views.main_window import MainWindow

    window = MainWindow()  # no saved geometry: the first start
    qtbot.addWidget(window)
    assert window.open_model(str(tiny_m3))
    window.show()
    qtbot.waitExposed(window)
    free = window.screen().availableGeometry()
    assert free.contains(window.frameGeometry()), (window.frameGeometry(), free)
    try:
        minimum = window.minimumSizeHint().expandedTo(window.minimumSize())
        assert minimum.width() <= 1024 and minimum.height() <= 700, minimum
        person.resize_window(window, 1024, 700)
        qtbot.waitUntil(lambda: (window.width(), window.height()) == (1024, 700), timeout=WAIT_MS)
        window._size_docks()  # the layout a first start at this size gets
        qtbot.wait(200)
        convert = window.convert
        for widget in (window.editor.grid.viewport(), window.editor.rules, window.size.total, window.size.fit_text,
                       convert.convert_button, convert.force, window.policy_label):
            qtbot.waitUntil(lambda w=widget: _on_screen_in(window, w), timeout=WAIT_MS)
        person.activate(window)
        before = convert.force.isChecked()
        person.click(convert.force)
        assert convert.force.isChecked() != before  # the convert panel answers a click
        tabs = [bar for bar in window.findChildren(QTabBar) if bar.count() == 2 and "Tensors" in
                [bar.tabText(i) for i in range(2)]]
        assert tabs, "the tensor tree is in a tab of the size panel's dock"
        bar = tabs[0]
        index = [bar.tabText(i) for i in range(2)].index("Tensors")
        person.click(bar, bar.tabRect(index).center())
        qtbot.waitUntil(lambda: _on_screen_in(window, window.tree.view.viewport()), timeout=WAIT_MS)
    finally:
        window.shutdown()
