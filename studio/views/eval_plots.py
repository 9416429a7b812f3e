"""The Evaluate tab's plots: KL and perplexity per window, the distribution of per-position KL,
and the error the conversion measured per layer (its ``quant_errors.json``)."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QPalette
from PySide6.QtWidgets import QSizePolicy

from studio.core.evaluate.defaults import KLD_PERCENTILES
from studio.core.evaluate.stats import percentile_key
from studio.core.model.roles import FAMILY_COLOURS, FAMILY_LABELS
from studio.views.size_panel import layer_ticks

PERCENT_STEPS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100)
ONE_TWO_FIVE = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)
KL_FLOOR = 1e-6  # per-position KL below this (or exactly 0) is drawn in the lowest bin
KL_BINS_PER_DECADE = 5
REFERENCE_COLOUR, OUTPUT_COLOUR, MARKER_COLOUR = "#0072B2", "#D55E00", "#CC79A7"


def percent_ticks(low: float, high: float) -> tuple[float, float, list[tuple[float, str]]]:
    """A log axis of percentages covering `low`..`high`: its ends (round values just outside the
    data) and labelled ticks between them, 1-2-5 steps when the range is wide. Positions are
    log10, as pyqtgraph's log mode wants."""
    start = max([v for v in PERCENT_STEPS if v <= low], default=PERCENT_STEPS[0])
    stop = min([v for v in PERCENT_STEPS if v >= high], default=PERCENT_STEPS[-1])
    values = [v for v in PERCENT_STEPS if start <= v <= stop]
    if len(values) > 7:
        values = [v for v in values if v in ONE_TWO_FIVE or v in (start, stop)]
    return start, stop, [(math.log10(v), f"{v:g}") for v in values]


def kl_histogram(kl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bin edges in log10 nats, counts) of per-position KL on log-spaced bins."""
    logs = np.log10(np.maximum(kl, KL_FLOOR))
    low = math.floor(logs.min() * KL_BINS_PER_DECADE) / KL_BINS_PER_DECADE
    high = math.ceil(logs.max() * KL_BINS_PER_DECADE) / KL_BINS_PER_DECADE
    edges = np.arange(low, max(high, low + 1 / KL_BINS_PER_DECADE) + 1e-9, 1 / KL_BINS_PER_DECADE)
    counts, edges = np.histogram(logs, bins=edges)
    return edges, counts


TITLE_SIZE = "10pt"
PLOT_ROW_HEIGHT = 140  # below this pyqtgraph's y axes run out of room for their tick labels
LABEL_POINT_SIZE = 8  # the KL histogram's percentile labels
LEGEND_COLUMNS, LEGEND_LINE = 5, 22  # the per-layer plot's legend: columns, and about the pixels of a line


class EvalPlots(pg.GraphicsLayoutWidget):
    """Two columns: KL and perplexity per window (left); the KL distribution and the per-layer
    error (right), its legend under it. Short titles and no third column: at 1280 and 1024 wide the
    Evaluate tab has about 650 px, and a plot's title is as wide as its text (it was cut off)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setAntialiasing(True)
        self.setMinimumHeight(2 * PLOT_ROW_HEIGHT + 2 * LEGEND_LINE + 24)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self._foreground = self.palette().color(QPalette.ColorRole.Text)
        self.kl_plot = self.addPlot(row=0, col=0, title="KL per window (mean, nats)")
        self.kl_plot.setLabel("bottom", "window")
        # The two lines are named in the title, in their colours: a legend would cover them.
        self.ppl_plot = self.addPlot(row=1, col=0, title=f"Perplexity: <span style='color: "
                                     f"{REFERENCE_COLOUR};'>reference</span>, <span style='color: "
                                     f"{OUTPUT_COLOUR};'>output</span>")
        self.ppl_plot.setLabel("bottom", "window")
        self.ppl_plot.setXLink(self.kl_plot)
        self.kl_hist = self.addPlot(row=0, col=1, title="KL per position")
        self.kl_hist.setLabel("bottom", "KL (nats)")
        self.kl_hist.setLabel("left", "positions")
        self._percentile_lines: list[pg.InfiniteLine] = []
        self.kl_hist.getViewBox().sigResized.connect(self._stack_labels)
        self.kl_hist.setToolTip("How many positions drifted by how much: a long tail to the right is where the "
                                "output disagrees with the reference.\nDashed lines: the "
                                + ", ".join(f"{p:g}th" for p in KLD_PERCENTILES) + " percentiles.")
        self.layer_plot = self.addPlot(row=1, col=1, title="Error per layer (quant_errors.json)")
        self.layer_plot.setLabel("bottom", "layer")
        self.layer_plot.setLabel("left", "error", units="%")
        self.layer_plot.getAxis("left").enableAutoSIPrefix(False)
        self.layer_plot.setLogMode(x=False, y=True)
        self.layer_plot.showGrid(x=False, y=True, alpha=0.25)
        # Under the plots, across both columns: never over the lines, never past the right edge.
        self.layer_legend = pg.LegendItem(colCount=LEGEND_COLUMNS, frame=False, labelTextSize="8pt")
        self.layer_legend.layout.setContentsMargins(2, 2, 2, 2)
        self.addItem(self.layer_legend, row=2, col=0, colspan=2)
        self.layer_plot.setToolTip("Relative error ||dequantize(quantize(W)) - W|| / ||W|| the conversion measured, "
                                   "per layer and role family (element-weighted RMS; log scale).\n"
                                   "Typical: 8-bit about 0.5%, 4-bit 5-10%, 2-bit 30-50%.")
        self.layer_hint = pg.TextItem("No quant_errors.json in the output folder\n"
                                      "(convert with \"Measure error\" to get one).", anchor=(0.5, 0.5))
        for plot in (self.kl_plot, self.ppl_plot, self.kl_hist, self.layer_plot):
            plot.setTitle(plot.titleLabel.text, size=TITLE_SIZE)
            plot.setMinimumHeight(PLOT_ROW_HEIGHT)
            plot.setMinimumWidth(0)
            plot.titleLabel.setMinimumWidth(0)  # a title cut short, never a plot pushed off the edge
            plot.getAxis("left").setWidth(44)  # the same width in both rows: the columns line up
        self.ci.layout.setColumnStretchFactor(0, 1)
        self.ci.layout.setColumnStretchFactor(1, 1)
        self.show_profile({})

    # --- the evaluation ---------------------------------------------------------------------------

    def clear_result(self) -> None:
        self._percentile_lines = []
        for plot in (self.kl_plot, self.ppl_plot, self.kl_hist):
            plot.clear()
            plot.getAxis("bottom").setTicks(None)
            plot.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)  # not the previous result's axes
            plot.enableAutoRange()

    def show_result(self, result, colour: str) -> None:
        self.clear_result()
        windows = [w for w in result.per_window if w.kld_mean is not None]
        if windows:
            x = np.array([result.per_window.index(w) for w in windows], dtype=float)
            self.kl_plot.addItem(pg.BarGraphItem(x=x, height=[w.kld_mean for w in windows], width=0.7, brush=colour))
            self.kl_plot.addLine(y=result.kld_mean, pen=pg.mkPen(self._foreground, style=Qt.PenStyle.DashLine))
            self.ppl_plot.plot(x, [w.ppl_reference for w in windows], pen=pg.mkPen(REFERENCE_COLOUR, width=2),
                               symbol="o", symbolSize=5, symbolBrush=REFERENCE_COLOUR, name="reference")
            self.ppl_plot.plot(x, [w.ppl for w in windows], pen=pg.mkPen(OUTPUT_COLOUR, width=2),
                               symbol="o", symbolSize=5, symbolBrush=OUTPUT_COLOUR, name="output")
            self.kl_plot.setXRange(-0.6, len(result.per_window) - 0.4, padding=0)
            step = max(1, math.ceil(len(result.per_window) / 10))  # whole windows only, ten labels at most
            ticks = [[(i, str(i)) for i in range(0, len(result.per_window), step)], []]
            for plot in (self.kl_plot, self.ppl_plot):
                plot.getAxis("bottom").setTicks(ticks)
        kl = result.per_position_kld
        if kl is not None and kl.size:
            self._show_distribution(result, np.asarray(kl, dtype=np.float64), colour)

    def _show_distribution(self, result, kl: np.ndarray, colour: str) -> None:
        edges, counts = kl_histogram(kl)
        self.kl_hist.plot(edges, counts, stepMode="center", fillLevel=0, brush=colour,
                          pen=pg.mkPen(colour, width=1))
        decades = range(math.floor(edges[0]), math.ceil(edges[-1]) + 1)
        self.kl_hist.getAxis("bottom").setTicks([[(d, f"1e{d}") for d in decades], []])
        span = edges[-1] - edges[0]
        # Room on the right for the last percentile's label; room on top for the labels' heights.
        self.kl_hist.setXRange(edges[0], edges[-1] + 0.12 * span, padding=0.02)
        self.kl_hist.setYRange(0, max(int(counts.max()), 1) * 1.1, padding=0)
        font = QFont(self.font())
        font.setPointSize(LABEL_POINT_SIZE)
        for p in KLD_PERCENTILES:
            value = getattr(result, percentile_key(p))
            if value is not None:
                line = pg.InfiniteLine(pos=math.log10(max(value, KL_FLOOR)), angle=90, label=f"{p:g}%",
                                       pen=pg.mkPen(MARKER_COLOUR, style=Qt.PenStyle.DashLine),
                                       labelOpts={"color": self._foreground, "anchors": [(0, 0.5), (0, 0.5)]})
                line.label.setFont(font)
                line.label.textItem.document().setDocumentMargin(1)  # 4 by default: 21 px a label
                self.kl_hist.addItem(line)
                self._percentile_lines.append(line)
        self._stack_labels()

    def _stack_labels(self) -> None:
        """The percentile labels one under the other from the top, a label's height apart in pixels:
        the percentiles sit close together, and labels at fixed fractions of the height overlapped
        once the plot was short."""
        height = self.kl_hist.getViewBox().height()
        if height <= 0:
            return
        for i, line in enumerate(self._percentile_lines):
            step = line.label.boundingRect().height()
            line.label.setPosition(max(0.0, 1 - (2 + i * (step + 1) + step / 2) / height))

    # --- the conversion's per-layer error ------------------------------------------------------------

    def show_profile(self, profile: dict[str, dict[int, float]]) -> None:
        """One line per role family, in the family's role colour; a hint when there is nothing to show."""
        plot = self.layer_plot
        plot.clear()
        self.layer_legend.clear()
        if not profile:
            self.ci.layout.setRowFixedHeight(2, 0)
            plot.getAxis("bottom").setTicks(None)
            plot.getAxis("left").setTicks(None)
            plot.addItem(self.layer_hint, ignoreBounds=True)
            self.layer_hint.setPos(0.5, 0.5)
            self.layer_hint.setColor(self._foreground)
            plot.setXRange(0, 1, padding=0)
            plot.setYRange(0, 1, padding=0)
            plot.getAxis("left").setStyle(showValues=False)
            return
        plot.getAxis("left").setStyle(showValues=True)
        layers = sorted({layer for by_layer in profile.values() for layer in by_layer})
        plot.getAxis("bottom").setTicks([layer_ticks(layers), []])
        percents = [100 * e for by_layer in profile.values() for e in by_layer.values() if e > 0]
        if percents:
            start, stop, ticks = percent_ticks(min(percents), max(percents))
            plot.getAxis("left").setTicks([ticks, []])
            plot.setYRange(math.log10(start), math.log10(stop), padding=0.04)
        for family, by_layer in profile.items():
            colour = FAMILY_COLOURS.get(family, "#BBBBBB")
            layers = list(by_layer)
            percent = [100 * by_layer[layer] for layer in layers]
            line = plot.plot(layers, percent, pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=6,
                             symbolBrush=colour, symbolPen=None)
            self.layer_legend.addItem(line, FAMILY_LABELS.get(family, family))
        # The layout would squeeze the legend's row to nothing under the plots' stretch: reserve its lines.
        self.ci.layout.setRowFixedHeight(2, self.layer_legend.layout.preferredHeight())
        plot.enableAutoRange(axis="x")

    def apply_palette(self, palette: QPalette) -> None:
        """Plot colours from the palette (dark themes included)."""
        self._foreground = palette.color(QPalette.ColorRole.Text)
        self.setBackground(palette.color(QPalette.ColorRole.Base))
        for plot in (self.kl_plot, self.ppl_plot, self.kl_hist, self.layer_plot):
            plot.setTitle(plot.titleLabel.text, color=self._foreground, size=TITLE_SIZE)
            for name in ("left", "bottom"):
                plot.getAxis(name).setPen(self._foreground)
                plot.getAxis(name).setTextPen(self._foreground)
        self.layer_legend.setLabelTextColor(self._foreground)
        self.layer_hint.setColor(self._foreground)
