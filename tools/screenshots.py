"""Screenshots of the window at the sizes people use, for looking at before a release.

    python tools/screenshots.py [--out DIR] [--sizes 1280x800,1024x700,1920x1080]

Under the current Qt platform (offscreen when there is no display), for each
size: the main window on the demo model at its first-start layout, a finished
conversion of the demo (the Convert panel's state), the Evaluate tab after a
real quick evaluation of that conversion against the demo, and the Fit to
budget dialog with a proposal. PNGs go to DIR (default ./screenshots) as
SIZE-main.png, SIZE-converted.png, SIZE-evaluate.png, SIZE-fit.png.

Settings live in a temporary folder, so the first-start layout is what shows
and the user's own settings are never read or touched.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_SIZES = "1280x800,1024x700,1920x1080"
WAIT_S = 300


def _wait_until(condition, timeout_s: float = WAIT_S, what: str = "") -> None:
    from PySide6.QtWidgets import QApplication

    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            raise SystemExit(f"screenshots: timed out waiting for {what or 'the window'}.")
        QApplication.processEvents()
        time.sleep(0.01)


def _settle(ms: int = 300) -> None:
    from PySide6.QtWidgets import QApplication

    end = time.monotonic() + ms / 1000
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def _save(widget, path: Path) -> None:
    _settle()
    if not widget.grab().save(str(path)):
        raise SystemExit(f"screenshots: cannot write {path}.")
    print(path)


def _isolated_settings(folder: str) -> None:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    app.setOrganizationName("ConfigIStudioScreenshots")
    app.setApplicationName("screenshots")
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    for fmt in (QSettings.Format.IniFormat, QSettings.Format.NativeFormat):
        QSettings.setPath(fmt, QSettings.Scope.UserScope, folder)
    QSettings().clear()


def shoot(size: tuple[int, int], out: Path, work: Path) -> None:
    from studio.core.bundled import demo_model_path
    from studio.views.main_window import MainWindow

    from PySide6.QtCore import QSettings

    QSettings().clear()  # a first start at this size: not the layout the previous size saved on closing
    tag = f"{size[0]}x{size[1]}"
    window = MainWindow()
    try:
        window.resize(*size)
        window.show()
        assert window.open_model(str(demo_model_path()), raise_errors=True)
        _wait_until(lambda: window._docks_sized, 30, "the first-start layout")
        window.controller.flush()
        _save(window, out / f"{tag}-main.png")

        panel = window.convert
        panel.quiet = True
        target = work / f"demo-{tag}"
        panel.output.setText(str(target))
        finished = []
        panel.conversion_finished.connect(finished.append)
        panel.conversion_stopped.connect(lambda reason: finished.append(reason))
        if not panel.start():
            _wait_until(lambda: panel.question is not None, 10, "the convert question")
            from PySide6.QtWidgets import QMessageBox

            panel.question.button(QMessageBox.StandardButton.Yes).click()
        _wait_until(lambda: bool(finished), WAIT_S, "the conversion")
        if isinstance(finished[0], str):
            raise SystemExit(f"screenshots: the conversion stopped: {finished[0]}")
        _save(window, out / f"{tag}-converted.png")

        evaluation = window.evaluate
        results = []
        evaluation.result_ready.connect(results.append)
        evaluation.failed.connect(results.append)
        window.open_evaluation()
        evaluation.context.setValue(64)
        evaluation.max_tokens.setValue(256)  # a quick evaluation: seconds on the demo
        assert evaluation.start_from_fields(), "the Evaluate tab did not start"
        _wait_until(lambda: bool(results) and not evaluation.running, WAIT_S, "the evaluation")
        if isinstance(results[0], str):
            raise SystemExit(f"screenshots: the evaluation failed: {results[0]}")
        _save(window, out / f"{tag}-evaluate.png")

        window.tabs.setCurrentWidget(window.editor)
        dialog = window.editor.open_fit_dialog()
        dialog.propose()
        _wait_until(lambda: dialog.accept_button.isEnabled(), WAIT_S, "the fit proposal")
        _save(dialog, out / f"{tag}-fit.png")
        dialog.reject()
    finally:
        window.shutdown()
        window.close()
        window.deleteLater()
        _settle(50)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="screenshots", help="folder for the PNGs (default: ./screenshots)")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"WxH,WxH,… (default: {DEFAULT_SIZES})")
    args = parser.parse_args(argv)
    try:
        sizes = [tuple(int(n) for n in s.lower().split("x")) for s in args.sizes.split(",") if s.strip()]
        assert all(len(s) == 2 and s[0] > 0 and s[1] > 0 for s in sizes)
    except (ValueError, AssertionError):
        parser.error(f"--sizes takes WxH,WxH (e.g. {DEFAULT_SIZES}), not {args.sizes!r}")
    if "QT_QPA_PLATFORM" not in os.environ and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"

    from studio.core.bundled import demo_model_path
    from studio.views.app import _application
    from studio.views.theme import apply_chosen_theme

    if demo_model_path() is None:
        print("screenshots: the demo model is not installed.", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    app = _application()
    with tempfile.TemporaryDirectory(prefix="configi-screenshots-") as temp:
        _isolated_settings(str(Path(temp) / "settings"))
        apply_chosen_theme(app)
        for size in sizes:
            shoot(size, out, Path(temp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
