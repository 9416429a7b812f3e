"""Publish a converted folder to the Hub: repo id, private or not, progress and cancel.

The upload runs on a Worker (studio.core.hub.publish); cancelling stops before
the next file, and publishing again later skips what the Hub already holds.
"""

from __future__ import annotations

import functools
from pathlib import Path

from PySide6.QtWidgets import (QCheckBox, QDialog, QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton,
                               QVBoxLayout)

from studio.core.formatting import human_bytes
from studio.core.hub.publish import PublishCancelled, publish
from studio.views.icons import icon
from studio.worker import Worker


class PublishDialog(QDialog):
    def __init__(self, folder: str, parent=None):
        super().__init__(parent)
        self.folder = folder
        self.worker: Worker | None = None
        self.result = None
        self.setWindowTitle("Publish to the Hugging Face Hub")
        self.repo = QLineEdit(placeholderText=f"org/{Path(folder).name}")
        self.repo.setToolTip("The model repo to publish to; it is created if it does not exist")
        self.private = QCheckBox("Private", toolTip="Create the repo private (an existing repo keeps its visibility)")
        self.publish_button = QPushButton(icon("save"), "Publish")
        self.publish_button.clicked.connect(self.start)
        self.cancel_button = QPushButton(icon("cancel"), "Cancel")
        self.cancel_button.clicked.connect(self.reject)
        self.bar = QProgressBar(textVisible=True)
        self.bar.setRange(0, 1000)
        self.status = QLabel(f"Uploads {folder} with its model card, policy and evaluation. "
                             "Uses your Hugging Face login (hf auth login) or HF_TOKEN.", wordWrap=True)
        row = QHBoxLayout()
        row.addWidget(QLabel("Repo:"))
        row.addWidget(self.repo, 1)
        row.addWidget(self.private)
        buttons = QHBoxLayout()
        buttons.addWidget(self.bar, 1)
        buttons.addWidget(self.publish_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.resize(560, self.sizeHint().height())

    @property
    def busy(self) -> bool:
        return self.worker is not None and self.worker.isRunning()

    def start(self) -> bool:
        repo = self.repo.text().strip() or self.repo.placeholderText()
        if self.busy:
            return False
        fn = functools.partial(publish, self.folder, repo, private=self.private.isChecked())
        self.worker = Worker(lambda progress, cancel: fn(progress=lambda *p: progress(p), cancel=cancel),
                             cancelled_errors=(PublishCancelled,), parent=self)
        self.worker.progress.connect(self._progress)
        self.worker.succeeded.connect(self._succeeded)
        self.worker.failed.connect(self._stopped)
        self.worker.cancelled.connect(self._stopped)
        self.publish_button.setEnabled(False)
        self.status.setText(f"Checking {self.folder} and creating {repo} if needed …")
        self.worker.start()
        return True

    def _progress(self, p) -> None:
        name, done, total = p
        self.bar.setValue(int(1000 * done / total) if total else 0)
        if name:
            self.status.setText(f"Uploading {name}\n{human_bytes(done)} of {human_bytes(total)} done")

    def _finish(self) -> None:
        self.publish_button.setEnabled(True)
        if self.worker is not None:
            self.worker.wait()

    def _succeeded(self, result) -> None:
        self._finish()
        self.result = result
        self.bar.setValue(1000)
        self.status.setText(f"Published {result.files} files to {result.url}\ncommit {result.commit}")
        self.publish_button.setEnabled(False)
        self.cancel_button.setText("Close")

    def _stopped(self, message: str) -> None:
        self._finish()
        self.status.setText(message)

    def reject(self) -> None:
        """Cancel a running upload (it stops before the next file) or close."""
        if self.busy:
            self.worker.cancel()
            self.status.setText("Cancelling after the current file …")
            return
        super().reject()

    def shutdown(self) -> None:
        if self.worker is not None:
            self.worker.stop()
