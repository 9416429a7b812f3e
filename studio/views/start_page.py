"""The start page: shown when no model is open. Open a folder, a Hub repo or a recent model."""

from __future__ import annotations

from PySide6.QtCore import QStringListModel, Qt, Signal
from PySide6.QtWidgets import QLabel, QListView, QPushButton, QVBoxLayout, QWidget

from studio.views.hub_open import HubOpenBox
from studio.views.icons import icon


class StartPage(QWidget):
    open_requested = Signal()
    recent_chosen = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        title = QLabel("Config-I Studio", objectName="startTitle")
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        blurb = QLabel("Open a Hugging Face model folder (safetensors) to see every tensor by role and layer, "
                       "paint a bit policy, watch the exact size, convert to MLX and chat with the result.")
        blurb.setWordWrap(True)
        blurb.setAlignment(Qt.AlignmentFlag.AlignCenter)
        open_button = QPushButton(icon("open"), "Open model folder…")
        open_button.setToolTip("Open a model folder (Ctrl+O)")
        open_button.setMinimumHeight(36)
        open_button.clicked.connect(self.open_requested)
        self.hub = HubOpenBox()
        self.recent = QStringListModel(self)
        self.recent_view = QListView()
        self.recent_view.setModel(self.recent)
        self.recent_view.setUniformItemSizes(True)
        self.recent_view.setEditTriggers(QListView.EditTrigger.NoEditTriggers)
        self.recent_view.activated.connect(lambda index: self.recent_chosen.emit(index.data()))
        self.recent_view.setToolTip("Double-click or press Enter to open")

        self.recent_title = QLabel("Recent models:")
        self.recent_view.setMaximumHeight(8 * self.recent_view.fontMetrics().lineSpacing() + 12)
        hint = QLabel("Or from a terminal: <code>configi-studio MODEL_FOLDER</code>; "
                      "<code>configi-studio --help</code> lists the commands.", textFormat=Qt.TextFormat.RichText)
        hint.setWordWrap(True)
        hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        hint.setEnabled(False)

        column = QVBoxLayout()
        column.addStretch(1)
        column.addWidget(title)
        column.addSpacing(6)
        column.addWidget(blurb)
        column.addSpacing(16)
        column.addWidget(open_button)
        column.addSpacing(8)
        column.addWidget(self.hub)
        column.addSpacing(16)
        column.addWidget(self.recent_title)
        column.addWidget(self.recent_view)
        column.addSpacing(10)
        column.addWidget(hint)
        column.addStretch(2)
        holder = QWidget()
        holder.setLayout(column)
        holder.setMinimumWidth(520)  # the blurb reads as a paragraph, not a column of words
        holder.setMaximumWidth(640)
        layout = QVBoxLayout(self)
        layout.addWidget(holder, 1, Qt.AlignmentFlag.AlignHCenter)

    def set_recent(self, paths: list[str]) -> None:
        self.recent.setStringList(paths)
        self.recent_title.setVisible(bool(paths))
        self.recent_view.setVisible(bool(paths))
