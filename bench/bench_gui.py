"""GUI figures on the full MiniMax-M3 replica (header-only, ~1,500 units, ~23,000 tensors).

    python bench/bench_gui.py [--replica DIR]

Prints: time to open the model and show the tree; a full tree scroll (paint per
step); expanding a stacked expert unit (128 tensors); a paint stroke to the
updated size panel (and tree); and the cost of one policy change in the tree,
collapsed and with layers and blocks expanded.
Runs offscreen with its own settings scope.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replica", help="an existing M3 replica folder (default: write one to a temp dir)")
    args = parser.parse_args()

    from PySide6.QtCore import QSettings, Qt
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    tmp = tempfile.mkdtemp(prefix="bench_gui_")
    app = QApplication([])
    app.setOrganizationName("ConfigIStudioBench")
    app.setApplicationName("bench")
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, tmp)

    replica = args.replica
    if not replica:
        from factory import write_m3_replica
        replica = str(write_m3_replica(Path(tmp) / "m3"))

    from studio.views.main_window import MainWindow

    started = time.perf_counter()
    window = MainWindow()
    window.resize(1600, 1000)
    built = time.perf_counter()
    window.open_model(replica)
    window.show()
    app.processEvents()
    window.tree.view.viewport().repaint()
    shown = time.perf_counter()
    project = window.controller.project
    print(f"model: {len(project.units):,} units, {len(project.inventory.tensors):,} tensors, "
          f"{project.num_layers} layers")
    print(f"window built                 {1000 * (built - started):8.1f} ms")
    print(f"open M3 replica + show tree  {1000 * (shown - built):8.1f} ms")

    view = window.tree.view
    signals = []
    window.tree.model.dataChanged.connect(lambda *a: signals.append(1))

    def tree_update(label: str, window=window) -> None:
        """The window's path after a policy change: the tree panel tells its view what changed."""
        emit, total = [], []
        for _ in range(10):
            signals.clear()
            t = time.perf_counter()
            window.tree.policy_updated()
            emit.append(time.perf_counter() - t)
            view.viewport().repaint()
            total.append(time.perf_counter() - t)
        print(f"{label:29s}{1000 * statistics.median(total):8.1f} ms median with the repaint "
              f"({1000 * statistics.median(emit):.1f} ms for {len(signals)} dataChanged)")

    tree_update("tree policy update, collapsed")
    view.expandToDepth(1)
    app.processEvents()
    bar = view.verticalScrollBar()
    steps = list(range(0, bar.maximum() + 1, max(1, bar.maximum() // 100)))
    times = []
    for value in steps:
        t = time.perf_counter()
        bar.setValue(value)
        view.viewport().repaint()
        times.append(time.perf_counter() - t)
    print(f"tree scroll + repaint        {1000 * statistics.median(times):8.2f} ms median, "
          f"{1000 * max(times):.2f} ms max over {len(steps)} steps ({view.model().rowCount()} top rows, "
          f"depth 2 expanded)")

    stacked = next(i for i, u in enumerate(project.units) if u.transform == "stack")
    index = window.tree.proxy.mapFromSource(window.tree.model.unit_index(stacked))
    t = time.perf_counter()
    view.expand(index)
    view.scrollTo(index)
    view.viewport().repaint()
    print(f"expand 128 expert tensors    {1000 * (time.perf_counter() - t):8.1f} ms")

    tree_update("tree policy update, depth 2")
    bar.setValue(0)
    tree_update("  same, scrolled to the top")

    editor, c = window.editor, window.controller
    editor.set_brush("4")
    grid = editor.grid
    vp = grid.viewport()
    figures = []
    for layer in (10, 20, 30, 40):
        start = grid.cell_rect("expert_gate", layer).center()
        end = grid.cell_rect("expert_down", layer).center()
        grid.scrollTo(grid.grid().index_of("expert_gate", layer))
        start = grid.cell_rect("expert_gate", layer).center()
        end = grid.cell_rect("expert_down", layer).center()
        updates = window.size.updates
        t = time.perf_counter()
        QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
        QTest.mouseMove(vp, end)
        QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, end)
        while window.size.updates == updates:
            app.processEvents()
        window.size.repaint()
        figures.append(time.perf_counter() - t)
    print(f"stroke -> size panel updated {1000 * statistics.median(figures):8.1f} ms median "
          f"(includes the {c._timer.interval()} ms coalescing window; the tree follows within 100 ms)")

    t = time.perf_counter()
    for _ in range(20):
        project.set_policy(c.policy if project.policy is not c.policy else project.policy.with_rules(project.policy.rules))
    print(f"core set_policy (estimate)   {1000 * (time.perf_counter() - t) / 20:8.1f} ms")
    t = time.perf_counter()
    for _ in range(10):
        window.size.update_estimate(project.estimate)
        window.size.repaint()
    print(f"size panel update + repaint  {1000 * (time.perf_counter() - t) / 10:8.1f} ms")
    window.shutdown()
    window.close()
    window.deleteLater()
    app.processEvents()
    del window
    return 0


if __name__ == "__main__":
    sys.exit(main())
