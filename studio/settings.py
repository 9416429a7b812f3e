"""Every settings key the window uses, declared once with its type and default.

Values live in QSettings under the application's organization and name, so a
test that sets its own names (or `QSettings.setPath` to a temporary folder)
never touches the user's settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

from studio.core.defaults import DEFAULT_GROUP_SIZE

ORGANIZATION = "ConfigI"
APPLICATION = "Config-I Studio"
MAX_RECENT = 8


@dataclass(frozen=True)
class Key:
    name: str
    type: type
    default: object
    doc: str = ""


WINDOW_GEOMETRY = Key("window/geometry", QByteArray, QByteArray(), "main window geometry")
WINDOW_STATE = Key("window/state", QByteArray, QByteArray(), "dock and toolbar layout")
RECENT_MODELS = Key("models/recent", list, [], "recently opened model folders, newest first")
RECENT_HUB_REPOS = Key("models/recent_hub", list, [], "recently opened Hub repos (org/name[@revision]), newest first")
LAST_POLICY_DIR = Key("policy/dir", str, "", "folder of the last saved or loaded policy file")
MAC_GB = Key("fit/mac_gb", int, 256, "Mac memory for the fit gauge, GB")
CONTEXT = Key("fit/context", int, 32768, "context length for the fit gauge, tokens")
OUTPUT_DIR = Key("convert/output_dir", str, "", "last output folder")
PAINT_GROUP_SIZE = Key("paint/group_size", int, DEFAULT_GROUP_SIZE, "group size of painted quantize values")
PAINT_MODE = Key("paint/mode", str, "affine", "mode of painted quantize values")
MEASURE_ERRORS = Key("convert/measure_errors", bool, True, "write quant_errors.json while converting")
CONVERT_RATE = Key("convert/rate", float, 0.0, "bytes of source a second the last conversion read (0: none yet)")
RECOVERY = Key("session/recovery", str, "", "unsaved policy edits and their model (JSON), cleared on a clean end")
CALIBRATE = Key("convert/calibrate", bool, False, "calibrate quantization on the bundled corpus while converting")
MODEL_DIR = Key("models/dir", str, "", "folder the Open model dialog starts in (where the last model was chosen)")
CARRY_POLICY = Key("models/carry_policy", bool, False, "open the next model with the current policy, not its own")
THEME = Key("view/theme", str, "system", "colour theme: system, light or dark")
THEMES = ("system", "light", "dark")
CALIBRATE_METHOD = Key("convert/calibrate_method", str, "gptq", "calibration method: gptq or learned (block-wise)")

KEYS = (WINDOW_GEOMETRY, WINDOW_STATE, RECENT_MODELS, RECENT_HUB_REPOS, LAST_POLICY_DIR, MAC_GB, CONTEXT,
        OUTPUT_DIR, PAINT_GROUP_SIZE, PAINT_MODE, MEASURE_ERRORS, CONVERT_RATE, RECOVERY, CALIBRATE, MODEL_DIR,
        CARRY_POLICY, THEME, CALIBRATE_METHOD)


def store() -> QSettings:
    return QSettings()


def start_folder(key: Key) -> str:
    """Where a file dialog opens: the folder `key` remembers while it still exists, else the home folder
    (never the current directory, which for an installed app is wherever it was launched, or the package)."""
    folder = get(key)
    if folder and Path(folder).is_dir():
        return folder
    return str(Path.home())


def rescue_folder() -> Path:
    """Where recovered edits whose model cannot be opened are kept: beside the settings file."""
    return Path(store().fileName()).parent / "recovered-policies"


def get(key: Key):
    value = store().value(key.name, key.default)
    if value is None:
        return key.default
    try:
        if key.type is list:
            if isinstance(value, str):
                return [value]
            return [str(v) for v in value]
        if key.type is bool:  # INI files give "true"/"false" back as strings
            return value if isinstance(value, bool) else str(value).lower() in ("true", "1")
        if key.type is QByteArray:
            return value if isinstance(value, QByteArray) else QByteArray(value)
        return key.type(value)
    except (TypeError, ValueError):
        return key.default


def put(key: Key, value) -> None:
    store().setValue(key.name, value)


def add_recent(path: str, key: Key = RECENT_MODELS) -> list[str]:
    recent = [p for p in get(key) if p != path]
    recent = [path, *recent][:MAX_RECENT]
    put(key, recent)
    return recent
