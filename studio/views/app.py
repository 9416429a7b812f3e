"""`run_app(args)`: create the application, open a model (or the start page), run or screenshot."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from studio.core.bundled import demo_model_path
from studio.core.errors import StudioError


def _application():
    from PySide6.QtWidgets import QApplication

    from studio import settings

    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
    if not app.organizationName():
        app.setOrganizationName(settings.ORGANIZATION)
    if not app.applicationName() or app.applicationName() == Path(sys.argv[0]).stem:
        app.setApplicationName(settings.APPLICATION)
    app.setApplicationDisplayName("Config-I Studio")
    return app


def build_window(model: str | None, policy: str | None):
    """The main window with `model` (or the demo model, or the start page) open.

    A plain start after a crash reopens the model the unsaved edits belong to (a
    Hub repo by its id and commit) and puts them back. If that model cannot be
    opened any more, the start goes on without it and the edits are kept in a
    policy file the window names."""
    from studio.core.check_model import check_model
    from studio.views.main_window import MainWindow
    from studio.views.session import pending_recovery, rescue, same_model

    if model:
        check_model(model, policy=policy)  # the checks every command runs, before any window exists
    record = pending_recovery() if policy is None else None  # edits a crashed session left unsaved
    window = MainWindow()
    if record and not model:
        try:
            window.open_model(record["model"], None, raise_errors=True)
        except (StudioError, OSError) as exc:
            window.recovery_failed(record, str(exc), rescue(record))
            record = None
        else:
            window.restore_session(record)
            return window
    demo = demo_model_path()
    path = model or (str(demo) if demo else None)
    if path:
        window.open_model(path, policy, raise_errors=True)
        if record and same_model(path, record):
            window.restore_session(record)
    return window


def screenshot(window, path: str) -> None:
    from PySide6.QtWidgets import QApplication

    window.resize(1600, 1000)
    window.show()
    for _ in range(5):
        QApplication.processEvents()
    window.controller.flush()
    QApplication.processEvents()
    image = window.grab()
    if not image.save(path):
        raise StudioError(f"cannot write the screenshot to {path}.")


def run_app(args) -> int:
    shot = getattr(args, "screenshot", None)
    if shot and "QT_QPA_PLATFORM" not in os.environ:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    app = _application()
    from studio.views.theme import apply_chosen_theme, follow_system

    own_app = not getattr(app, "_studio_themed", False)
    if own_app:
        apply_chosen_theme(app)
        app._studio_themed = True
        follow_system(app)
    window = build_window(getattr(args, "model", None), getattr(args, "policy", None))
    try:
        if shot:
            screenshot(window, shot)
            return 0
        window.show()
        return app.exec()
    finally:
        window.shutdown()
        # Delete the widgets while Qt and Python are both alive: pyqtgraph items
        # left for interpreter teardown can crash PySide6 at exit.
        import shiboken6

        shiboken6.delete(window)
