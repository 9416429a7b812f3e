"""A new user's first minute: the window opens the demo, Config-I converts it, and the result talks."""

from __future__ import annotations

import re

import pytest

from studio.core.bundled import demo_model_path
from studio.core.convert import convert
from studio.core.runtime.generation import SamplingParams
from studio.core.project import Project
from studio.main import main
from test_gui_fixtures import studio_settings  # noqa: F401

DEMO = demo_model_path()
pytestmark = [pytest.mark.skipif(DEMO is None, reason="the demo model is not installed")]


def _known_word_share(text: str) -> float:
    vocabulary = set((DEMO / "words.txt").read_text().split())
    words = [w.lower() for w in re.findall(r"[A-Za-z]+", text)]
    return sum(w in vocabulary for w in words) / max(len(words), 1)


@pytest.fixture(scope="module")
def demo_config_i(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "config-i"
    project = Project.open(DEMO, "config-i")
    result = convert(project, out)
    assert result.bytes_written == project.estimate.total_bytes
    return out


def test_window_opens_the_demo_without_arguments(qtbot):
    from studio.views.app import build_window

    window = build_window(None, None)
    qtbot.addWidget(window)
    assert window.controller.project.inventory.root == DEMO.resolve()
    assert window.controller.project.policy.name == "Config-I"
    window.shutdown()


def test_config_i_conversion_chats_through_the_worker(qtbot, demo_config_i):
    from studio.chat import ChatPane

    pane = ChatPane()
    qtbot.addWidget(pane)
    with qtbot.waitSignal(pane.model_loaded, timeout=60000):
        pane.open_model(demo_config_i)
    pane.sampling.set_params(SamplingParams(temperature=0.0, max_tokens=40, seed=1))
    with qtbot.waitSignal(pane.reply_finished, timeout=60000) as blocker:
        assert pane.send("Tell me about the young lady.")
    stats = blocker.args[1]
    assert stats is not None and stats.generated_tokens > 5
    reply = pane.conversation().turns[-1].content
    assert _known_word_share(reply) > 0.7, reply
    pane.shutdown()


def test_headless_chat_with_the_demo_prints_a_reply(capsys, demo_config_i):
    assert main(["chat", str(demo_config_i), "-p", "Good morning.", "--max-tokens", "30", "--temp", "0"]) == 0
    reply = capsys.readouterr().out
    assert len(reply.split()) >= 5 and _known_word_share(reply) > 0.7, reply
