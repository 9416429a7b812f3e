"""The live size panel: totals and bits per weight, bars by role and by layer, memory fit.

Plot items are created once per project and updated in place with setOpts, so a
drag that changes the estimate thirty times a second costs three small updates.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import QEvent, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPalette
from PySide6.QtWidgets import QComboBox, QGridLayout, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from studio import settings
from studio.core.formatting import human_bytes
from studio.core.memory import CONTEXT_CHOICES, MAC_MEMORY_GB, default_context
from studio.core.model.roles import ROLE_BY_KEY
from studio.views.palette import role_colour, tint
from studio.views.policy_grid import SHORT

UNITS = (("bytes", 1), ("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12))


def size_unit(nbytes: float) -> tuple[str, float]:
    """The unit human_bytes would write `nbytes` in (a 3 MB model in MB, a 444 GB one in GB)."""
    name, scale = UNITS[0]
    for name_, scale_ in UNITS[1:]:
        if nbytes >= scale_:
            name, scale = name_, scale_
    return name, scale


# Role families as the role chart names them when there is no room for a bar per role.
FAMILY_SHORT = {"embedding": "Emb, Head", "attention": "Attention", "expert_gate_up": "E gate/up",
                "expert_down": "E down", "shared_expert": "Shared", "dense_mlp": "Dense MLP", "router": "Router",
                "indexer": "Indexer", "norm": "Norms", "vision": "Vision", "mtp": "MTP", "other": "Other"}


def layer_ticks(layers: list[int], most: int = 8) -> list[tuple[int, str]]:
    """Whole-layer ticks, at most about `most` of them: every layer, or every 2, 5, 10, 20..."""
    if not layers:
        return []
    span = max(layers) - min(layers) + 1
    step = next(s for s in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if span / s <= most or s == 1000)
    return [(layer, str(layer)) for layer in layers if layer % step == 0]


class MemoryFitGauge(QWidget):
    """A bar: weights, KV cache and overhead against the memory the GPU may use."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.fit = None
        self.setMinimumHeight(26)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_fit(self, fit) -> None:
        self.fit = fit
        self.setToolTip(fit.sentence() if fit else "")
        self.update()

    def paintEvent(self, event):
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(self.rect()).adjusted(1, 3, -1, -3)
        palette = self.palette()
        painter.fillRect(rect, tint(palette.color(QPalette.ColorRole.Text), palette.color(QPalette.ColorRole.Base), 0.08))
        fit = self.fit
        if fit is None:
            return
        scale = max(fit.needed_bytes, fit.limit_bytes) * 1.05
        x = rect.left()
        for value, colour in ((fit.weights_bytes, "#0072B2"), (fit.kv_bytes, "#E69F00"), (fit.overhead_bytes, "#999999")):
            width = rect.width() * value / scale
            painter.fillRect(QRectF(x, rect.top(), width, rect.height()), QColor(colour))
            x += width
        limit_x = rect.left() + rect.width() * fit.limit_bytes / scale
        painter.setPen(pg.mkPen("#009E73" if fit.fits else "#D55E00", width=3))
        painter.drawLine(int(limit_x), int(rect.top() - 2), int(limit_x), int(rect.bottom() + 2))


def _context_label(tokens: int) -> str:
    return f"{tokens // 1024}K context" if tokens % 1024 == 0 else f"{tokens:,} context"


class SizePanel(QWidget):
    fit_changed = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.project = None
        self._roles: list[str] = []
        self._bars: list[tuple[str, tuple[str, ...], QColor]] = []  # (label, roles, colour) per bar, top down
        self.updates = 0
        self.unit, self.scale = "GB", 1e9  # the plots' size unit: follows the model's size

        self.total = self._figure("—")
        self.total_caption = self._caption("output size")
        self.bpw_q = self._figure("—")
        self.bpw_q_caption = self._caption("bits per weight, quantized weights")
        self.bpw_m = self._figure("—")
        self.bpw_m_caption = self._caption("bits per weight, whole output")
        self.total.setToolTip("Exact bytes the converter will write, against the source checkpoint")
        self.bpw_q.setToolTip("8 × bytes of the quantized weights / their elements (the figure model cards quote)")
        self.bpw_m.setToolTip("8 × all bytes written / all parameters written. mlx-lm's compute_bits_per_weight "
                              "counts only what its loader keeps (no vision tower)")
        figures = QGridLayout()
        for col, (fig, cap) in enumerate(((self.total, self.total_caption), (self.bpw_q, self.bpw_q_caption),
                                          (self.bpw_m, self.bpw_m_caption))):
            figures.addWidget(fig, 0, col)
            figures.addWidget(cap, 1, col)

        self.role_plot = pg.PlotWidget()
        self.role_plot.setMenuEnabled(False)
        self.role_plot.setMouseEnabled(False, False)
        self.role_plot.hideButtons()
        self.role_plot.setLabel("bottom", "GB (outline: source)")
        self.role_plot.getAxis("bottom").enableAutoSIPrefix(False)  # our unit, never "(x1e-06)"
        self.role_plot.getAxis("left").setWidth(56)
        self.role_plot.setToolTip("Output size by role (filled) against the source (outline)")
        self.role_plot.installEventFilter(self)
        self.source_bars = pg.BarGraphItem(x0=[], y=[], height=0.7, width=[], brush=None, pen=pg.mkPen("#888888"))
        self.role_bars = pg.BarGraphItem(x0=[], y=[], height=0.5, width=[], brushes=[], pen=None)
        self.role_plot.addItem(self.source_bars)
        self.role_plot.addItem(self.role_bars)

        self.layer_plot = pg.PlotWidget()
        self.layer_plot.setMenuEnabled(False)
        self.layer_plot.setMouseEnabled(False, False)
        self.layer_plot.hideButtons()
        self.layer_plot.setLabel("bottom", "layer")
        self.layer_plot.setLabel("left", "GB")
        self.layer_plot.getAxis("left").enableAutoSIPrefix(False)
        self.layer_plot.getAxis("left").setWidth(56)
        self.layer_plot.setToolTip("Output size by layer")
        self.layer_bars = pg.BarGraphItem(x=[], height=[], width=0.8, brush="#21918C", pen=None)
        self.layer_plot.addItem(self.layer_bars)

        self.mac = QComboBox(toolTip="Unified memory of the Mac to run on")
        for gb in MAC_MEMORY_GB:
            self.mac.addItem(f"{gb} GB Mac", gb)
        self.context = QComboBox(toolTip="Context length (KV cache in bf16)")
        for tokens in CONTEXT_CHOICES:
            self.context.addItem(_context_label(tokens), tokens)
        self.mac.setCurrentIndex(max(0, self.mac.findData(settings.get(settings.MAC_GB))))
        self.context.setCurrentIndex(max(0, self.context.findData(settings.get(settings.CONTEXT))))
        self.mac.currentIndexChanged.connect(self._fit_choice)
        self.context.currentIndexChanged.connect(self._fit_choice)
        self.gauge = MemoryFitGauge()
        self.fit_text = QLabel(wordWrap=True)
        fit_row = QHBoxLayout()
        fit_row.addWidget(QLabel("Memory fit:"))
        fit_row.addWidget(self.mac)
        fit_row.addWidget(self.context)
        fit_row.addStretch(1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(figures)
        layout.addLayout(fit_row)
        layout.addWidget(self.gauge)
        layout.addWidget(self.fit_text)
        layout.addWidget(self.role_plot, 3)
        layout.addWidget(self.layer_plot, 2)
        self.apply_palette(self.palette())

    @staticmethod
    def _figure(text: str) -> QLabel:
        label = QLabel(text, objectName="figure")
        label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        return label

    @staticmethod
    def _caption(text: str) -> QLabel:
        label = QLabel(text, objectName="figureCaption", wordWrap=True)
        label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        return label

    def apply_palette(self, palette: QPalette) -> None:
        background = palette.color(QPalette.ColorRole.Base)
        foreground = palette.color(QPalette.ColorRole.Text)
        for plot in (self.role_plot, self.layer_plot):
            plot.setBackground(background)
            for name in ("left", "bottom"):
                plot.getAxis(name).setPen(foreground)
                plot.getAxis(name).setTextPen(foreground)

    def set_project(self, project) -> None:
        self.project = project
        if project is None:
            return
        self._roles = list(project.roles_present())
        self.unit, self.scale = size_unit(project.estimate.source_bytes)
        self.role_plot.setLabel("bottom", f"{self.unit} (outline: source)")
        self.layer_plot.setLabel("left", self.unit)
        self._bars = []
        self._layout_bars()
        self._default_context(project)
        self._layers = sorted(k for k in project.estimate.by_layer if k is not None)
        self.layer_bars.setOpts(x=self._layers, height=[0] * len(self._layers))
        self.layer_plot.getAxis("bottom").setTicks([layer_ticks(self._layers), []])
        self.update_estimate(project.estimate)

    def _default_context(self, project) -> None:
        """The chosen context (32K until the user picks one), never past this model's own limit."""
        context = default_context(project.inventory.text_config, settings.get(settings.CONTEXT))
        if self.context.findData(context) < 0:
            at = sum(1 for tokens in range(self.context.count()) if self.context.itemData(tokens) < context)
            self.context.insertItem(at, _context_label(context) + " (model limit)", context)
        self.context.blockSignals(True)  # shown, not chosen: the setting stays the user's
        self.context.setCurrentIndex(self.context.findData(context))
        self.context.blockSignals(False)

    def eventFilter(self, watched, event):
        if watched is self.role_plot and event.type() == QEvent.Type.Resize:
            self._layout_bars()
        return False

    def _layout_bars(self) -> None:
        """A bar per role where every role's name has a line of its own; where the chart is too short
        for that (twenty roles on a laptop), a bar per role family, so no bar is ever unnamed. Every
        role's size is in the tooltip either way."""
        if self.project is None or not self._roles:
            return
        line = self.role_plot.fontMetrics().height()
        room = self.role_plot.height() - 40  # px for the bars, less the bottom axis
        if len(self._roles) * line <= room:
            bars = [(SHORT.get(r, r).replace(chr(10), " "), (r,), role_colour(r)) for r in self._roles]
        else:
            families: dict[str, list[str]] = {}
            for r in self._roles:
                families.setdefault(ROLE_BY_KEY[r].family, []).append(r)
            bars = [(FAMILY_SHORT.get(f, f), tuple(members), role_colour(members[0]))
                    for f, members in families.items()]
        if bars == self._bars:
            return
        self._bars = bars
        ys = list(range(len(bars)))
        by_source = self.project.estimate.by_role_source
        self.role_bars.setOpts(x0=[0] * len(bars), y=ys, width=[0] * len(bars),
                               brushes=[pg.mkBrush(colour) for _, _, colour in bars])
        self.source_bars.setOpts(x0=[0] * len(bars), y=ys,
                                 width=[sum(by_source.get(r, 0) for r in keys) / self.scale for _, keys, _ in bars])
        axis = self.role_plot.getAxis("left")
        axis.setTicks([[(i, label) for i, (label, _, _) in enumerate(bars)]])
        # Wide enough for the longest name: pyqtgraph leaves out a label it cannot fit.
        axis.setWidth(max(56, max(self.role_plot.fontMetrics().horizontalAdvance(label) for label, _, _ in bars) + 14))
        self.role_plot.getViewBox().invertY(True)
        self.role_plot.setYRange(-0.6, len(bars) - 0.4, padding=0)
        self._bar_widths(self.project.estimate)

    def _bar_widths(self, estimate) -> None:
        self.role_bars.setOpts(width=[sum(estimate.by_role.get(r, 0) for r in keys) / self.scale
                                      for _, keys, _ in self._bars])

    def update_estimate(self, estimate) -> None:
        if self.project is None:
            return
        self.updates += 1
        ratio = estimate.total_bytes / estimate.source_bytes if estimate.source_bytes else 0
        self.total.setText(human_bytes(estimate.total_bytes))
        self.total_caption.setText(f"output, {ratio:.0%} of the {human_bytes(estimate.source_bytes)} source")
        self.bpw_q.setText(f"{estimate.bpw_quantized:.3f}")
        self.bpw_m.setText(f"{estimate.bpw_output:.3f}")
        self._bar_widths(estimate)
        self.layer_bars.setOpts(height=[estimate.by_layer.get(l, 0) / self.scale for l in self._layers])
        self._update_fit()
        tips = [f"{ROLE_BY_KEY[r].label}: {human_bytes(estimate.by_role.get(r, 0))} "
                f"(source {human_bytes(estimate.by_role_source.get(r, 0))})" for r in self._roles]
        self.role_plot.setToolTip("Output size by role (filled) against the source (outline)\n" + "\n".join(tips))

    def _fit_choice(self) -> None:
        settings.put(settings.MAC_GB, self.mac.currentData())
        settings.put(settings.CONTEXT, self.context.currentData())
        self._update_fit()

    def _update_fit(self) -> None:
        if self.project is None:
            return
        fit = self.project.memory_fit(self.mac.currentData(), self.context.currentData())
        self.gauge.set_fit(fit)
        colour = "#009E73" if fit.fits else "#D55E00"
        self.fit_text.setText(f"<b style='color:{colour}'>{fit.verdict.capitalize()}</b>: {fit.needs} "
                              f"(weights <span style='color:#0072B2'>&#9632;</span>, KV cache "
                              f"<span style='color:#E69F00'>&#9632;</span>, runtime "
                              f"<span style='color:#999999'>&#9632;</span>; line: GPU limit)")
        self.fit_changed.emit(fit)
