"""Shared fixtures of the GUI tests: a private settings scope, tiny models, the M3 replica.

Other test_gui_* modules import these names; importing an autouse fixture turns
it on for that module.
"""

from __future__ import annotations

import pytest
from PySide6.QtCore import QSettings

from studio import settings

_MODELS: dict = {}


@pytest.fixture(autouse=True)
def studio_settings(qapp, tmp_path):
    """Every test gets its own organization/application names and settings folder."""
    qapp.setOrganizationName("ConfigIStudioTests")
    qapp.setApplicationName("gui-tests")
    folder = str(tmp_path / "settings")
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    for fmt in (QSettings.Format.IniFormat, QSettings.Format.NativeFormat):
        QSettings.setPath(fmt, QSettings.Scope.UserScope, folder)
    QSettings().clear()
    yield folder


def _model(request, key, fixture, build):
    if key not in _MODELS:
        try:
            _MODELS[key] = fixture(request.getfixturevalue)
        except pytest.FixtureLookupError:
            _MODELS[key] = build(request.getfixturevalue("tmp_path_factory"))
    return _MODELS[key]


def tiny_model_path(request, arch: str = "minimax_m3_vl"):
    def build(factory):
        from factory import make_tiny_model

        return make_tiny_model(arch, factory.mktemp(f"gui_{arch}"))

    return _model(request, ("tiny", arch), lambda get: get("tiny_model")(arch), build)


@pytest.fixture
def tiny_m3(request):
    return tiny_model_path(request, "minimax_m3_vl")


@pytest.fixture
def m3_replica(request):
    def build(factory):
        from factory import write_m3_replica

        return write_m3_replica(factory.mktemp("gui_m3_replica"))

    return _model(request, "m3", lambda get: get("m3_replica_mxfp8"), build)


def test_settings_are_private_and_typed(studio_settings):
    assert QSettings().fileName().startswith(studio_settings)
    assert settings.get(settings.MAC_GB) == 256
    settings.put(settings.MAC_GB, 128)
    assert settings.get(settings.MAC_GB) == 128
    assert settings.add_recent("/a") == ["/a"]
    assert settings.add_recent("/b") == ["/b", "/a"]
    assert settings.add_recent("/a") == ["/a", "/b"]
    assert len({k.name for k in settings.KEYS}) == len(settings.KEYS)


def open_window(qtbot, path, policy=None, size=(1400, 900)):
    """A shown main window with `path` open; the caller shuts it down."""
    from studio.views.main_window import MainWindow

    window = MainWindow()
    qtbot.addWidget(window)
    window.resize(*size)
    assert window.open_model(str(path), policy)
    window.show()
    qtbot.waitExposed(window)
    return window


def activate(qtbot, window, focus=None):
    """Make `window` the active window (shortcuts only reach an active window) and focus `focus`."""
    from PySide6.QtWidgets import QApplication

    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)
    if focus is not None:
        focus.setFocus()
        qtbot.waitUntil(focus.hasFocus)
