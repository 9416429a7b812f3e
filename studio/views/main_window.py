"""The main window: docks around the policy editor, menus, shortcuts, status bar."""

from __future__ import annotations

from pathlib import Path

import shiboken6
from PySide6.QtCore import QEvent, QSize, Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QFrame,
    QMainWindow,
    QMenu,
    QMessageBox,
    QScrollArea,
    QStackedWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from studio import settings
from studio.chat import ChatPane
from studio.core.errors import StudioError
from studio.core.policy.bit_policy import DEFAULT_PRESET, OWN_POLICY_FILE
from studio.core.project import Project
from studio.core.quant_error.error_map import FILE_NAME as QUANT_ERRORS
from studio.policy_editor import PolicyEditor
from studio.views.controller import ProjectController
from studio.views.convert_panel import ConvertPanel
from studio.views import shortcuts
from studio.views.eval_panel import EvalPanel
from studio.views.help_dialogs import SettingsDialog, ShortcutsDialog, about_box
from studio.views.hub_open import HubOpenDialog
from studio.views.publish_dialog import PublishDialog
from studio.views.icons import icon
from studio.views.model_opening import open_project
from studio.views.session import Session, restore
from studio.views.size_panel import SizePanel
from studio.views.start_page import StartPage
from studio.views.status_bar import StatusBar
from studio.views.tensor_tree import TensorTreePanel

TREE_FOLLOW_MS = 100
DEFAULT_SIZE = QSize(1600, 1000)
NARROW = 1200  # px below which the first layout stacks the tensor tree under the size panel's tab
NARROW_RIGHT = 330  # px of the shared dock there
SCREEN_MARGIN = QSize(24, 48)  # left for the window manager's frame and title bar
GRID_ROOM = 700  # px the policy grid needs for MiniMax-M3's 20 role columns at their minimum width


class PageStack(QStackedWidget):
    """The start page and the tabs. It reports no height-for-width: a scroll area would otherwise give
    it the tallest height any page could use at that width (the Evaluate tab's, ~900 px), not the room
    there is, and the Policy page's rules list would scroll out of sight."""

    def hasHeightForWidth(self) -> bool:
        return False


class MainWindow(QMainWindow):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Config-I Studio")
        self._shut_down = False  # after shutdown() closing asks nothing: the threads are gone
        self._publish: PublishDialog | None = None  # File > Publish's dialog while it is open
        self.startup_notice: QMessageBox | None = None  # why a crashed session's edits could not come back
        self.setWindowIcon(icon("app", "#333333"))
        self.controller = ProjectController(self)
        c = self.controller

        self.editor = PolicyEditor(c)
        self.session = Session(c, self.editor.save_dialog, self)
        self.tree = TensorTreePanel()
        self.size = SizePanel()
        self.convert = ConvertPanel(c)
        self.chat = ChatPane()
        self.evaluate = EvalPanel()
        self.start = StartPage()
        self.model_panels = (self.evaluate, self.chat)  # each has model_changed(project): another model is open

        self.tabs = QTabWidget(documentMode=True)
        self.tabs.addTab(self.editor, icon("reset"), "Policy")
        self.tabs.addTab(self.chat, icon("chat"), "Chat")
        self.tabs.addTab(self.evaluate, icon("evaluate"), "Evaluate")
        self.stack = PageStack()
        self.stack.addWidget(self.start)
        self.stack.addWidget(self.tabs)
        # Below the width the bars need (a 1024-pixel screen with both docks), the page scrolls
        # rather than pushing the docks and the status bar off the screen.
        holder = QWidget()
        QVBoxLayout(holder).setContentsMargins(0, 0, 0, 0)
        holder.layout().addWidget(self.stack)
        self.setCentralWidget(QScrollArea(widgetResizable=True, frameShape=QFrame.Shape.NoFrame, widget=holder))

        self.docks = {}
        for name, title, widget, area in (
                ("tensors", "Tensors", self.tree, Qt.DockWidgetArea.LeftDockWidgetArea),
                ("size", "Size and fit", self.size, Qt.DockWidgetArea.RightDockWidgetArea),
                ("convert", "Convert", self.convert, Qt.DockWidgetArea.RightDockWidgetArea)):
            dock = QDockWidget(title, self, objectName=f"dock_{name}")
            if name == "convert":  # its messages wrap; in a short dock they scroll rather than being cut
                # (sideways too when its vertical scroll bar leaves less than its buttons need: never cut)
                widget = QScrollArea(widgetResizable=True, frameShape=QFrame.Shape.NoFrame, widget=widget)
            dock.setWidget(widget)
            dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                             | QDockWidget.DockWidgetFeature.DockWidgetFloatable
                             | QDockWidget.DockWidgetFeature.DockWidgetClosable)
            self.addDockWidget(area, dock)
            self.docks[name] = dock
        # No dock may be squeezed below a usable width by the central tabs (the Chat tab did).
        self.docks["tensors"].setMinimumWidth(230)
        self.docks["size"].setMinimumWidth(280)
        self._docks_sized = False  # default widths are set once the docks are first shown

        # The tree tells its view in ~1 ms (one signal per parent on screen) but repainting its rows
        # costs ~10 ms on M3: during a drag it follows the size panel at most ten times a second.
        self._tree_timer = QTimer(self, singleShot=True, interval=TREE_FOLLOW_MS)
        self._tree_timer.timeout.connect(self.tree.policy_updated)
        status = StatusBar(self)
        self.setStatusBar(status)
        self.model_label, self.policy_label = status.model_label, status.policy_label

        self._actions()
        self._connect()
        geometry = settings.get(settings.WINDOW_GEOMETRY)
        if geometry.isEmpty() or not self.restoreGeometry(geometry):
            self.resize(DEFAULT_SIZE)
        self._fit_screen()
        state = settings.get(settings.WINDOW_STATE)
        if not state.isEmpty():
            self._docks_sized = self.restoreState(state)
        self._show_start()  # after restoreState, which would show the docks again
        self._apply_palette()

    # ----- wiring -----

    def _actions(self) -> None:
        def action(text, slot, shortcut=None, icon_name=None, tip=None):
            a = QAction(text, self)
            if shortcut:
                a.setShortcuts(shortcut)
            if icon_name:
                a.setIcon(icon(icon_name))
            a.setToolTip(tip or text)
            a.triggered.connect(slot)
            return a

        self.open_action = action("&Open model…", self.open_dialog, shortcuts.keys(QKeySequence.StandardKey.Open),
                                  "open", "Open a model folder (Ctrl+O)")
        self.save_action = action("&Save policy…", self.editor.save_dialog,
                                  shortcuts.keys(QKeySequence.StandardKey.Save), "save",
                                  "Save the policy to a file (Ctrl+S)")
        self.hub_action = action("Open from the &Hub…", self.open_hub_dialog, None, "open",
                                 "Open a model repo on the Hugging Face Hub without downloading its weights")
        self.load_action = action("&Load policy…", self.editor.load_dialog, None, "open")
        self.convert_action = action("&Convert", self.start_conversion, shortcuts.convert(), "convert",
                                     "Convert with this policy (Ctrl+Enter)")
        self.fit_action = action("&Fit to budget…", self.editor.open_fit_dialog, None, None,
                                 "Propose the bits that fit a size or a Mac with the least measured error")
        self.survey_action = action("&Survey errors", self.editor.survey_runner.start, None, None,
                                    "Measure every quantized tensor's error at 2-8 bits on samples of its weights")
        self.load_errors_action = action("&Load quant errors…", self.editor.load_errors_dialog, None, None,
                                         "Show the errors a conversion measured (quant_errors.json)")
        self.publish_action = action("&Publish a converted folder…", self.publish_dialog, None, None,
                                     "Upload a converted MLX folder to the Hugging Face Hub")
        self.carry_action = action("&Keep this policy for the next model", self._carry_toggled, None, None,
                                   "Open the next model with the current policy (off: each model opens "
                                   "clean, under its own policy file or Config-I)")
        self.carry_action.setCheckable(True)
        self.carry_action.setChecked(settings.get(settings.CARRY_POLICY))
        self.settings_action = action("Se&ttings…", self.open_settings, shortcuts.keys("Ctrl+,"), None,
                                      "Theme")
        self.shortcuts_action = action("&Keyboard shortcuts", self.show_shortcuts, shortcuts.keys("F1"), None)
        self.about_action = action("&About Config-I Studio", self.show_about)
        quit_action = action("&Quit", self.close, shortcuts.quit_app())
        self.next_tab_action = action("&Next tab", lambda: self._step_tab(1), shortcuts.next_tab())
        self.previous_tab_action = action("&Previous tab", lambda: self._step_tab(-1), shortcuts.previous_tab())
        # What needs an open model: greyed out on the start page.
        self._model_actions = (self.save_action, self.load_action, self.convert_action, self.fit_action,
                               self.survey_action, self.load_errors_action)
        for a in self._model_actions:
            a.setEnabled(False)
        undo, redo = self.editor.undo_action, self.editor.redo_action
        self.addAction(undo)
        self.addAction(redo)

        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction(self.open_action)
        file_menu.addAction(self.hub_action)
        self.recent_menu = file_menu.addMenu("Open &recent")
        file_menu.addAction(self.carry_action)
        file_menu.addSeparator()
        file_menu.addAction(self.load_action)
        file_menu.addAction(self.save_action)
        file_menu.addSeparator()
        file_menu.addAction(self.publish_action)
        file_menu.addSeparator()
        file_menu.addAction(self.settings_action)
        file_menu.addAction(quit_action)
        edit_menu = self.menuBar().addMenu("&Edit")
        edit_menu.addAction(undo)
        edit_menu.addAction(redo)
        model_menu = self.menuBar().addMenu("&Model")
        model_menu.addAction(self.convert_action)
        model_menu.addSeparator()
        model_menu.addAction(self.fit_action)
        model_menu.addAction(self.survey_action)
        model_menu.addAction(self.load_errors_action)
        view_menu = self.menuBar().addMenu("&View")
        view_menu.addAction(self.next_tab_action)
        view_menu.addAction(self.previous_tab_action)
        view_menu.addSeparator()
        for dock in self.docks.values():
            view_menu.addAction(dock.toggleViewAction())
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction(self.shortcuts_action)
        help_menu.addSeparator()
        help_menu.addAction(self.about_action)

        toolbar = self.addToolBar("Main")
        toolbar.setObjectName("toolbar_main")
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for a in (self.open_action, self.save_action, undo, redo, self.convert_action):
            toolbar.addAction(a)
        self._refresh_recent()

    def _connect(self) -> None:
        c = self.controller
        c.project_changed.connect(self._project_changed)
        c.estimate_changed.connect(self._estimate_changed)
        c.policy_named.connect(self._policy_named)
        c.cell_selected.connect(self.tree.show_cell)
        c.errors_changed.connect(self.tree.set_errors)
        self.tree.unit_selected.connect(c.unit_selected.emit)
        self.start.open_requested.connect(self.open_dialog)
        self.start.recent_chosen.connect(self.open_model)
        self.start.hub.opened.connect(self._hub_opened)
        self.convert.chat_requested.connect(self.open_chat)
        self.convert.evaluate_requested.connect(self.open_evaluation)
        self.convert.conversion_finished.connect(self._converted)

    # ----- models -----

    def open_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open model folder", settings.start_folder(settings.MODEL_DIR))
        if path:
            settings.put(settings.MODEL_DIR, str(Path(path).parent))
            self.open_model(path)

    def open_model(self, path: str, policy=None, *, raise_errors: bool = False) -> bool:
        if self.convert.busy:
            QMessageBox.information(self, "Open model", "Wait for the conversion to finish or cancel it first.")
            return False
        if not self.session.confirm_discard(self, "Open model", lambda: self.open_model(path, policy)):
            return False
        carried = policy is None and self._carrying()
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            project, source, note = open_project(path, self.controller.policy if carried else policy)
        except StudioError as exc:
            if raise_errors:
                raise
            QMessageBox.warning(self, "Open model", str(exc))
            return False
        finally:
            QApplication.restoreOverrideCursor()
        if note:
            self.statusBar().showMessage(note, 30000)
        self.set_project(project, self.controller.policy_source if carried else source)
        if project.inventory.source.remote:  # a Hub repo named on the command line or by crash recovery
            settings.add_recent(path, settings.RECENT_HUB_REPOS)
            self.start.hub.refresh_recent()
            return True
        if (Path(path) / QUANT_ERRORS).exists():  # a studio output: show what its conversion measured
            self.editor.load_errors(path, quiet=True)
        settings.add_recent(str(Path(path).resolve()))
        self._refresh_recent()
        return True

    def open_hub_dialog(self) -> HubOpenDialog:
        dialog = HubOpenDialog(self)
        dialog.finished.connect(dialog.deleteLater)  # a new one each time: no hidden dialogs pile up
        dialog.box.opened.connect(self._hub_opened)
        dialog.open()
        return dialog

    def _hub_opened(self, project: Project, ref: str) -> None:
        """A Hub repo has been read: it replaces the open model once unsaved edits are saved or let go."""
        if self.convert.busy:
            QMessageBox.information(self, "Open model", "Wait for the conversion to finish or cancel it first.")
            return
        if not self.session.confirm_discard(self, "Open from the Hub", lambda: self._hub_opened(project, ref)):
            return
        own = project.inventory.root / OWN_POLICY_FILE
        source = OWN_POLICY_FILE if own.exists() else DEFAULT_PRESET  # what Project.open chose
        if self._carrying():
            project.set_policy(self.controller.policy)
            source = self.controller.policy_source
        self.set_project(project, source)
        self.start.hub.refresh_recent()

    def _carrying(self) -> bool:
        """Whether the next model opens with the current policy (File > Keep this policy…; off by default)."""
        return self.carry_action.isChecked() and self.controller.policy is not None

    def _carry_toggled(self, on: bool) -> None:
        settings.put(settings.CARRY_POLICY, on)

    def set_project(self, project: Project, source: str = "") -> None:
        self.controller.set_project(project, source)

    def _project_changed(self, project) -> None:
        self.tree.set_project(project)
        self.size.set_project(project)
        # What the panels showed was about the previous model: each starts over. Panels that hold the
        # controller follow project_changed themselves; the others are told here, the one path.
        for panel in self.model_panels:
            panel.model_changed(project)
        for action in self._model_actions:
            action.setEnabled(project is not None)
        if project is None:
            self._show_start()
            return
        self.stack.setCurrentWidget(self.tabs)
        for dock in self.docks.values():
            dock.show()
        if not self._docks_sized and self.isVisible():
            self._size_docks()
        inv = project.inventory
        warnings = project.warnings
        self.model_label.setText(f"{inv.name} · {inv.config.get('model_type', '?')} · {inv.source_format} · "
                                 f"{project.num_layers} layers · {len(project.units):,} units · "
                                 f"{len(inv.tensors):,} tensors" + (f" · ⚠ {len(warnings)} warning(s)" if warnings else ""))
        self.model_label.setToolTip("\n".join(warnings) if warnings else inv.source.label)
        self.setWindowTitle(f"{inv.name} — Config-I Studio")

    def _fit_screen(self) -> None:
        """No larger than the screen's free area (a window saved on a bigger monitor, or the default
        1600x1000 on a 1280x800 laptop), and on it."""
        screen = self.screen() or QApplication.primaryScreen()
        if screen is None:
            return
        free = screen.availableGeometry()
        room = QSize(free.width() - SCREEN_MARGIN.width(), free.height() - SCREEN_MARGIN.height())
        now = QSize(self.width(), self.height())  # (self.size is the size panel)
        size = now.boundedTo(room).expandedTo(self.minimumSizeHint())
        if size != now:
            self.resize(size)
        frame = self.frameGeometry()
        if not free.contains(frame):
            frame.moveCenter(free.center())
            self.move(max(free.left(), frame.left()), max(free.top(), frame.top()))

    def _size_docks(self) -> None:
        """First-run dock widths from the window's: the grid keeps room for every column of a
        MiniMax-M3 (20), the tree gets the rest up to 440 (1280: 274 | grid | 306; 1600: 440 | grid | 320)."""
        width = self.width()
        if width < NARROW:  # the grid's bars and both side docks do not fit side by side: tree and size share
            self.tabifyDockWidget(self.docks["size"], self.docks["tensors"])  # a dock, with room for the
            self.docks["size"].raise_()  # convert panel's buttons beside its scroll bar (1024: grid | 330)
            self.resizeDocks([self.docks["size"]], [NARROW_RIGHT], Qt.Orientation.Horizontal)
        else:
            right = max(300, min(360, int(0.2 * width)))
            tree = max(230, min(440, width - right - GRID_ROOM))
            self.resizeDocks([self.docks["tensors"], self.docks["size"]], [tree, right], Qt.Orientation.Horizontal)
        convert = 170 if self.height() < 900 else int(0.28 * self.height())  # a finished run's buttons at 1080
        self.resizeDocks([self.docks["size"], self.docks["convert"]], [self.height() - convert, convert],
                         Qt.Orientation.Vertical)
        self._docks_sized = True

    def _estimate_changed(self, estimate) -> None:
        self.size.update_estimate(estimate)
        if not self._tree_timer.isActive():
            self._tree_timer.start()

    def _policy_named(self, name: str) -> None:
        self.policy_label.setText(f"Policy: {name}")

    def _show_start(self) -> None:
        self.stack.setCurrentWidget(self.start)
        for dock in self.docks.values():
            dock.hide()
        self.start.set_recent(settings.get(settings.RECENT_MODELS))

    def _refresh_recent(self) -> None:
        self.recent_menu.clear()
        recent = settings.get(settings.RECENT_MODELS)
        for path in recent:
            self.recent_menu.addAction(path, lambda p=path: self.open_model(p))
        self.recent_menu.setEnabled(bool(recent))
        self.start.set_recent(recent)

    # ----- convert, chat, evaluate -----

    def start_conversion(self) -> None:
        if self.controller.project is None:
            return
        self.docks["convert"].show()
        self.docks["convert"].raise_()
        self.convert.start()

    def _converted(self, result) -> None:
        """Show what the conversion measured, and make evaluating it one click."""
        self.statusBar().showMessage(f"Converted to {result.path}", 10000)
        # In a short dock the outcome and its Chat / Evaluate / Publish buttons are below the fold: show them.
        QTimer.singleShot(0, lambda: self.docks["convert"].widget().ensureWidgetVisible(self.convert.chat_button))
        if (Path(result.path) / QUANT_ERRORS).exists():
            self.editor.load_errors(str(result.path), quiet=True)
        project = self.controller.project
        if project is not None:
            # A Hub source's weights are not on this disk to compare with: the user picks the reference.
            remote = project.inventory.source.remote
            self.evaluate.set_paths(str(result.path), None if remote else str(project.inventory.root))

    def publish_dialog(self) -> PublishDialog | None:
        """File > Publish a converted folder…: any studio output, not only the one just converted."""
        folder = QFileDialog.getExistingDirectory(self, "Publish a converted folder",
                                                  settings.start_folder(settings.OUTPUT_DIR))
        return self.publish_folder(folder) if folder else None

    def publish_folder(self, folder: str) -> PublishDialog:
        dialog = PublishDialog(folder, self)
        dialog.finished.connect(dialog.deleteLater)
        self._publish = dialog
        dialog.open()
        return dialog

    def open_settings(self) -> SettingsDialog:
        dialog = SettingsDialog(self)
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()
        return dialog

    def show_shortcuts(self) -> ShortcutsDialog:
        actions = [a for menu in self.menuBar().findChildren(QMenu) for a in menu.actions()]
        actions += self.actions() + self.editor.actions()
        dialog = ShortcutsDialog(actions, self)
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()
        return dialog

    def show_about(self):
        return about_box(self)

    def _step_tab(self, step: int) -> None:
        """Ctrl+Tab / Ctrl+PgDn and back: Policy, Chat, Evaluate, wherever the focus is."""
        if self.stack.currentWidget() is self.tabs:
            self.tabs.setCurrentIndex((self.tabs.currentIndex() + step) % self.tabs.count())
            self.tabs.currentWidget().setFocus(Qt.FocusReason.TabFocusReason)

    def open_evaluation(self) -> None:
        self.tabs.setCurrentWidget(self.evaluate)

    def open_chat(self, path: str) -> None:
        self.tabs.setCurrentWidget(self.chat)
        self.chat.open_model(path)

    # ----- theme and closing -----

    def _apply_palette(self) -> None:
        """Colours drawn by hand (tree rows, size plots) follow the palette: at start and on a theme change."""
        palette = self.palette()
        self.tree.model.set_palette(palette)
        self.size.apply_palette(palette)

    def showEvent(self, event):
        super().showEvent(event)
        if not self._docks_sized and self.controller.project is not None:
            QTimer.singleShot(0, self._size_docks)  # once the window has its real size

    def changeEvent(self, event):
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_palette()
        super().changeEvent(event)

    def restore_session(self, record: dict) -> bool:
        """Put back the policy edits a crashed session left for this model (one undoable step)."""
        if not restore(self.controller, record):
            return False
        self.statusBar().showMessage("Recovered the unsaved policy edits of the last session "
                                     "(Edit > Undo drops them).", 30000)
        return True

    def recovery_failed(self, record: dict, reason: str, kept) -> None:
        """Say that a crashed session's model could not be reopened, and where its edits went."""
        where = f"They are kept in {kept}; File > Load policy… applies them to a model." if kept else \
            "They could not be written to a file either."
        self.startup_notice = QMessageBox(QMessageBox.Icon.Warning, "Unsaved edits of the last session",
                                          f"The last session ended with unsaved policy edits for {record['model']}, "
                                          f"which cannot be opened now: {reason}\n\n{where}",
                                          QMessageBox.StandardButton.Ok, self)
        self.startup_notice.setWindowModality(Qt.WindowModality.WindowModal)
        QTimer.singleShot(0, self.startup_notice.open)  # once the window is on screen, without blocking

    def closeEvent(self, event):
        if self.convert.busy:
            answer = QMessageBox.question(self, "Quit", "A conversion is running. Cancel it and quit?")
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        if not self._shut_down and not self.session.confirm_discard(self, "Quit", self.close):
            event.ignore()
            return
        self.session.clear()
        self.shutdown()
        settings.put(settings.WINDOW_GEOMETRY, self.saveGeometry())
        settings.put(settings.WINDOW_STATE, self.saveState())
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop every thread the window owns (cooperatively) and wait for it."""
        self._shut_down = True
        self._tree_timer.stop()
        self.editor.shutdown()
        self.convert.shutdown()
        self.start.hub.shutdown()
        if self._publish is not None and shiboken6.isValid(self._publish):
            self._publish.shutdown()
        self.chat.shutdown()
        self.evaluate.shutdown()
