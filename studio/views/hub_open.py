"""The "Open from the Hub" box: a repo id (recent ones remembered), opened off the GUI thread.

Opening reads the repo's file list, config.json, the tokenizer files and each
shard's safetensors header over HTTP (seconds, even for MiniMax-M3), so it
runs on a Worker; the box shows what it is doing and one sentence if it fails.
`opened(project, ref)` hands the project to the window.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from studio import settings
from studio.core.hub.refs import parse_ref
from studio.core.project import Project
from studio.views.icons import icon
from studio.worker import Worker


def _open(ref: str, policy, *, progress, cancel):
    return Project.open(ref, policy)


class HubOpenBox(QWidget):
    opened = Signal(object, str)  # Project, the repo reference as typed

    def __init__(self, parent=None):
        super().__init__(parent)
        self.worker: Worker | None = None
        self.repo = QComboBox(editable=True)
        self.repo.setToolTip("A model repo on the Hugging Face Hub: org/name, or org/name@revision")
        self.repo.lineEdit().setPlaceholderText("org/name[@revision]")
        self.repo.lineEdit().returnPressed.connect(self.start)
        self.repo.setMinimumContentsLength(28)
        self.open_button = QPushButton(icon("open"), "Open from the Hub",
                                       toolTip="Read the repo's config, tokenizer and safetensors headers; "
                                               "the weights stay on the Hub until you convert")
        self.open_button.clicked.connect(self.start)
        self.status = QLabel(wordWrap=True)
        self.status.setVisible(False)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.repo, 1)
        row.addWidget(self.open_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.status)
        self.refresh_recent()

    @property
    def busy(self) -> bool:
        return self.worker is not None and self.worker.isRunning()

    def refresh_recent(self) -> None:
        text = self.repo.currentText()
        self.repo.clear()
        self.repo.addItems(settings.get(settings.RECENT_HUB_REPOS))
        self.repo.setEditText(text)

    def _say(self, text: str) -> None:
        self.status.setText(text)
        self.status.setVisible(bool(text))

    def start(self, policy=None) -> bool:
        ref = self.repo.currentText().strip()
        if self.busy or not ref:
            return False
        if parse_ref(ref) is None:
            self._say(f"{ref!r} is not a Hub repo id; write org/name or org/name@revision.")
            return False
        self.worker = Worker(lambda progress, cancel: _open(ref, policy, progress=progress, cancel=cancel),
                             parent=self)
        self.worker.succeeded.connect(lambda project: self._succeeded(project, ref))
        self.worker.failed.connect(self._failed)
        self.open_button.setEnabled(False)
        self._say(f"Reading {ref}: config, tokenizer and safetensors headers …")
        self.worker.start()
        return True

    def _done(self) -> None:
        self.open_button.setEnabled(True)
        if self.worker is not None:
            self.worker.wait()

    def _succeeded(self, project, ref: str) -> None:
        self._done()
        self._say("")
        settings.add_recent(ref, settings.RECENT_HUB_REPOS)
        self.refresh_recent()
        self.opened.emit(project, ref)

    def _failed(self, message: str) -> None:
        self._done()
        self._say(message)

    def shutdown(self) -> None:
        if self.worker is not None:
            self.worker.stop()


class HubOpenDialog(QDialog):
    """File > Open from the Hub…: the box in a small dialog that closes once the repo is open."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Open from the Hugging Face Hub")
        self.box = HubOpenBox()
        self.box.opened.connect(lambda *_: self.accept())
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Only the config, tokenizer and safetensors headers are read; "
                                "the weights stay on the Hub until you convert.", wordWrap=True))
        layout.addWidget(self.box)
        self.resize(520, self.sizeHint().height())

    def reject(self) -> None:
        self.box.shutdown()
        super().reject()
