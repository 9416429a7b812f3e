"""Custom item data roles shared by every model and view of the window, in one place."""

from PySide6.QtCore import Qt

ROLE_KEY = Qt.ItemDataRole.UserRole + 1      # str: the tensor role key of a node or column
LAYER = Qt.ItemDataRole.UserRole + 2         # int | None: the layer of a node or grid row
UNIT_INDEX = Qt.ItemDataRole.UserRole + 3    # int: index into project.units (-1 if not a unit)
NODE_KIND = Qt.ItemDataRole.UserRole + 4     # str: "layer" | "block" | "unit" | "tensor"
SORT_VALUE = Qt.ItemDataRole.UserRole + 5    # sortable raw value (bytes as int)
RULE_INDEX = Qt.ItemDataRole.UserRole + 6    # int | None: the rule that decides a cell or unit
ACTION = Qt.ItemDataRole.UserRole + 7        # the policy Action of a grid cell
HAS_UNITS = Qt.ItemDataRole.UserRole + 8     # bool: whether a grid cell has any unit
ERROR = Qt.ItemDataRole.UserRole + 9        # float | None: measured relative error of a cell or unit
