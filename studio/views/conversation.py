"""How a chat reads on screen: conversations as HTML, reasoning collapsed, sampling controls."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from PySide6.QtCore import QUrl, Qt
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QGridLayout,
    QLabel,
    QSpinBox,
    QSplitter,
    QTextBrowser,
    QWidget,
)

from studio.core.runtime.generation import GenerationStats, SamplingParams, split_thinking


@dataclass
class Turn:
    role: str  # "user" | "assistant"
    content: str
    stats: GenerationStats | None = None
    starts_inside: bool = False  # the chat template opened a think block before the reply


@dataclass
class Conversation:
    """One side's chat: finished turns plus the reply streaming in."""

    turns: list[Turn] = field(default_factory=list)
    streaming: str | None = None  # None when no reply is in flight
    streaming_inside: bool = False
    expanded: set = field(default_factory=set)  # turn indexes whose reasoning is open
    model: str = ""

    def history(self) -> list[dict]:
        return [{"role": t.role, "content": t.content} for t in self.turns]


def _para(text: str) -> str:
    return html.escape(text).replace("\n", "<br>")


class ConversationView(QTextBrowser):
    """Renders a Conversation as HTML; reasoning collapsed behind a link."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setOpenLinks(False)
        self.anchorClicked.connect(self._toggle)
        self.conversation = Conversation()
        self.document().setDefaultStyleSheet(
            ".you { font-weight: 600; color: #2f6db3; } .model { font-weight: 600; color: #2e8b57; }"
            " .think { color: #7a7a7a; } .stats { color: #8a8a8a; font-size: small; }"
            " a { color: #5b7fb8; text-decoration: none; }"
        )

    def render(self) -> None:
        bar = self.verticalScrollBar()
        at_bottom = bar.value() >= bar.maximum() - 4
        self.setHtml(self._html())
        if at_bottom:
            bar.setValue(bar.maximum())

    def _html(self) -> str:
        conv = self.conversation
        if not conv.turns and conv.streaming is None:
            hint = "Open a model, then type a message below." if not conv.model else f"Chat with {conv.model}."
            return f"<p class='think'>{html.escape(hint)}</p>"
        parts = []
        for index, turn in enumerate(conv.turns):
            if turn.role == "user":
                parts.append(f"<p><span class='you'>You</span><br>{_para(turn.content)}</p>")
            else:
                parts.append(self._assistant(index, turn.content, turn.starts_inside, False, turn.stats))
        if conv.streaming is not None:
            parts.append(self._assistant(len(conv.turns), conv.streaming, conv.streaming_inside, True, None))
        return "".join(parts)

    def _assistant(self, index: int, text: str, inside: bool, streaming: bool, stats) -> str:
        split = split_thinking(text, starts_inside=inside, streaming=streaming)
        out = ["<p><span class='model'>Model</span>"]
        if split.thinking or split.thinking_open:
            open_ = index in self.conversation.expanded
            label = "Thinking…" if split.thinking_open and streaming else f"Thought ({len(split.thinking.split())} words)"
            arrow = "▾" if open_ else "▸"
            out.append(f"<br><a href='think:{index}'>{arrow} {html.escape(label)}</a>")
            if open_ and split.thinking:
                out.append(f"<br><span class='think'><i>{_para(split.thinking)}</i></span>")
        body = split.answer + (" ▍" if streaming else "")
        out.append(f"<br>{_para(body)}")
        if stats is not None:
            out.append(f"<br><span class='stats'>{html.escape(stats.summary())}</span>")
        out.append("</p>")
        return "".join(out)

    def _toggle(self, url: QUrl) -> None:
        text = url.toString()
        if not text.startswith("think:"):
            return
        index = int(text.split(":", 1)[1])
        self.conversation.expanded ^= {index}
        self.render()


class CompareView(QSplitter):
    """Two conversation views side by side; the second shows in compare mode."""

    def __init__(self, parent=None):
        super().__init__(Qt.Horizontal, parent)
        self.views = (ConversationView(self), ConversationView(self))
        for view in self.views:
            self.addWidget(view)
        self.views[1].hide()

    def set_compare(self, on: bool) -> None:
        self.views[1].setVisible(on)


# --- controls ----------------------------------------------------------------


class SamplingControls(QWidget):
    """Temperature, top-p, top-k, max tokens, repetition penalty, seed."""

    def __init__(self, parent=None):
        super().__init__(parent)
        d = SamplingParams()
        self.temperature = self._double(0.0, 5.0, 0.05, d.temperature, "0 is greedy")
        self.top_p = self._double(0.01, 1.0, 0.01, d.top_p, "nucleus sampling; 1 is off")
        self.top_k = self._int(0, 100000, 1, d.top_k, "keep the k likeliest tokens")
        self.top_k.setSpecialValueText("off")
        self.max_tokens = self._int(1, 131072, 64, d.max_tokens, "most tokens per reply")
        self.repetition_penalty = self._double(0.5, 2.0, 0.05, d.repetition_penalty, "1 is off")
        self.seed = self._int(-1, 2**31 - 1, 1, -1, "the same seed gives the same reply; compare mode sends one seed to both models")
        self.seed.setSpecialValueText("random")
        # Two rows of three: the pane fits beside the docks on a 1280-pixel screen.
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        for i, (label, widget) in enumerate((
            ("Temp", self.temperature), ("Top-p", self.top_p), ("Top-k", self.top_k),
            ("Max tokens", self.max_tokens), ("Rep. penalty", self.repetition_penalty), ("Seed", self.seed),
        )):
            grid.addWidget(QLabel(label), i // 3, 2 * (i % 3))
            grid.addWidget(widget, i // 3, 2 * (i % 3) + 1)
        grid.setColumnStretch(6, 1)

    @staticmethod
    def _int(lo, hi, step, value, tip) -> QSpinBox:
        box = QSpinBox()
        box.setRange(lo, hi)
        box.setSingleStep(step)
        box.setValue(value)
        box.setToolTip(tip)
        return box

    @staticmethod
    def _double(lo, hi, step, value, tip) -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setDecimals(2)
        box.setRange(lo, hi)
        box.setSingleStep(step)
        box.setValue(value)
        box.setToolTip(tip)
        return box

    def params(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature.value(),
            top_p=self.top_p.value(),
            top_k=self.top_k.value(),
            max_tokens=self.max_tokens.value(),
            repetition_penalty=self.repetition_penalty.value(),
            seed=None if self.seed.value() < 0 else self.seed.value(),
        )

    def set_params(self, p: SamplingParams) -> None:
        self.temperature.setValue(p.temperature)
        self.top_p.setValue(p.top_p)
        self.top_k.setValue(p.top_k)
        self.max_tokens.setValue(p.max_tokens)
        self.repetition_penalty.setValue(p.repetition_penalty)
        self.seed.setValue(-1 if p.seed is None else p.seed)
