"""The chat pane: a model-host thread, batched streaming, Stop, think sections, compare."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QTimer, QUrl

from studio.chat import ChatPane, Turn
from studio.core.runtime.generation import SamplingParams, load_model, reply
from test_generation import USER, thinking_model_dir, tiny_model_dir

WAIT_MS = 20000


@pytest.fixture
def pane(qtbot):
    widget = ChatPane()
    qtbot.addWidget(widget)
    widget.resize(1000, 640)
    yield widget
    widget.shutdown()
    assert not widget._host.isRunning()


@pytest.fixture(scope="module")
def llama_dir(request):
    return tiny_model_dir(request, "llama")


def _open(qtbot, pane, path, side=0):
    with qtbot.waitSignal(pane.model_loaded, timeout=WAIT_MS) as blocker:
        pane.open_model(path, side)
    assert blocker.args[0] == side


def _set(pane, params: SamplingParams):
    pane.sampling.set_params(params)
    assert pane.sampling.params() == params


def test_reply_streams_in_batches_and_the_ui_stays_free(qtbot, pane, llama_dir):
    params = SamplingParams(temperature=1.0, top_p=0.95, max_tokens=300, seed=11)
    _open(qtbot, pane, llama_dir)
    _set(pane, params)
    ticks, chunks = [], []
    timer = QTimer(interval=5)
    timer.timeout.connect(lambda: ticks.append(pane.busy))
    pane._host.chunk.connect(lambda *a: chunks.append(a))
    timer.start()
    with qtbot.waitSignal(pane.reply_finished, timeout=WAIT_MS) as blocker:
        assert pane.send("hello there")
        assert pane.busy and not pane.send_button.isEnabled() and pane.stop_button.isEnabled()
    timer.stop()
    stats = blocker.args[1]
    assert ticks.count(True) >= 3  # the event loop kept running while the thread generated
    assert 1 <= len(chunks) < stats.generated_tokens  # batched, not one signal a token

    expected, _ = reply(load_model(llama_dir), USER, params)
    turns = pane.conversation().turns
    assert [t.role for t in turns] == ["user", "assistant"]
    assert turns[1].content == expected and turns[1].stats is stats
    assert stats.summary() in pane.stats_label.text()
    assert not pane.busy and pane.send_button.isEnabled() and not pane.stop_button.isEnabled()


def test_stop_ends_generation_at_once(qtbot, pane, llama_dir):
    _open(qtbot, pane, llama_dir)
    _set(pane, SamplingParams(temperature=0.0, max_tokens=100000))
    with qtbot.waitSignal(pane._host.chunk, timeout=WAIT_MS):
        pane.send("hello there")
    with qtbot.waitSignal(pane.reply_finished, timeout=WAIT_MS) as blocker:
        pane.stop()
    stats = blocker.args[1]
    assert stats.finish_reason == "cancelled"
    assert 0 < stats.generated_tokens < 5000
    assert pane.conversation().turns[-1].content  # what came so far stays


def test_second_turn_sends_the_history(qtbot, pane, llama_dir):
    params = SamplingParams(temperature=0.0, max_tokens=8)
    _open(qtbot, pane, llama_dir)
    _set(pane, params)
    pane.system_prompt.setText("be brief")
    for text in ("hello there", "and again"):
        with qtbot.waitSignal(pane.reply_finished, timeout=WAIT_MS):
            pane.send(text)
    history = pane.conversation().history()
    expected, _ = reply(load_model(llama_dir), history[:3], params, system="be brief")
    assert history[3]["content"] == expected


def test_think_sections_are_collapsed_and_expand_on_click(pane):
    view = pane.compare_view.views[0]
    view.conversation.turns = [
        Turn("user", "why?"),
        Turn("assistant", "<think>secret chain of thought</think>The answer is 42."),
    ]
    view.conversation.streaming = "<think>still working"
    view.render()
    text = view.toPlainText()
    assert "The answer is 42." in text and "secret" not in text and "still working" not in text
    assert "Thought (4 words)" in text and "Thinking…" in text
    view.anchorClicked.emit(QUrl("think:1"))
    assert "secret chain of thought" in view.toPlainText()
    view.anchorClicked.emit(QUrl("think:1"))
    assert "secret" not in view.toPlainText()

    # A template that opens the block itself: the reply starts inside it.
    view.conversation.streaming, view.conversation.streaming_inside = "planning the reply", True
    view.render()
    assert "Thinking…" in view.toPlainText() and "planning" not in view.toPlainText()


def test_reply_of_a_thinking_template_is_collapsed(qtbot, pane, request, tmp_path):
    _open(qtbot, pane, thinking_model_dir(request, tmp_path))
    _set(pane, SamplingParams(temperature=0.0, max_tokens=12))
    with qtbot.waitSignal(pane.reply_finished, timeout=WAIT_MS):
        pane.send("hello there")
    turn = pane.conversation().turns[-1]
    assert turn.starts_inside and turn.content
    text = pane.compare_view.views[0].toPlainText()
    assert "Thought (" in text  # the reply never closed its think block: all of it is reasoning


def test_compare_sends_the_same_prompt_and_seed_to_two_models(qtbot, pane, llama_dir, request):
    moe_dir = tiny_model_dir(request, "qwen3_moe")
    pane.set_compare(True)
    assert pane.compare_box.isChecked() and pane.compare_view.views[1].isVisibleTo(pane)
    _open(qtbot, pane, llama_dir, 0)
    assert not pane.send_button.isEnabled()  # side B has no model yet
    _open(qtbot, pane, moe_dir, 1)
    assert "float32" in pane._sides[1].label.text()
    _set(pane, SamplingParams(max_tokens=10))  # random seed: the pane picks one for both
    done = []
    pane.reply_finished.connect(lambda side, stats: done.append(side))
    pane.send("hello there")
    qtbot.waitUntil(lambda: sorted(done) == [0, 1], timeout=WAIT_MS)
    for side in (0, 1):
        turns = pane.conversation(side).turns
        assert [t.role for t in turns] == ["user", "assistant"] and turns[0].content == "hello there"
    assert "A: " in pane.stats_label.text() and "B: " in pane.stats_label.text()

    transcript = pane.transcript()
    assert "## Model A" in transcript and "## Model B" in transcript
    assert pane.conversation(1).turns[1].content in transcript


def test_transcript_copy_and_save(qtbot, pane, llama_dir, tmp_path):
    from PySide6.QtGui import QGuiApplication

    _open(qtbot, pane, llama_dir)
    _set(pane, SamplingParams(temperature=0.0, max_tokens=6))
    pane.system_prompt.setText("be brief")
    with qtbot.waitSignal(pane.reply_finished, timeout=WAIT_MS):
        pane.send("hello there")
    answer = pane.conversation().turns[1].content
    saved = pane.save_transcript(tmp_path / "chat.md").read_text(encoding="utf-8")
    assert "**System:** be brief" in saved and "**You:** hello there" in saved and answer in saved
    pane.copy_transcript()
    assert QGuiApplication.clipboard().text() == saved


def test_bad_folder_shows_one_sentence(qtbot, pane, tmp_path):
    with qtbot.waitSignal(pane.error, timeout=WAIT_MS) as blocker:
        pane.open_model(tmp_path / "missing")
    assert "does not exist" in blocker.args[0]
    assert "does not exist" in pane.stats_label.text()
    assert not pane.send("hi")


def test_screenshot(qtbot, pane, llama_dir):
    _open(qtbot, pane, llama_dir)
    _set(pane, SamplingParams(temperature=0.0, max_tokens=16))
    with qtbot.waitSignal(pane.reply_finished, timeout=WAIT_MS):
        pane.send("hello there")
    view = pane.compare_view.views[0]
    view.conversation.turns.append(Turn("user", "and why?"))
    view.conversation.turns.append(Turn("assistant", "<think>a hidden line of reasoning</think>Because."))
    view.render()
    pane.show()
    image = pane.grab()
    assert not image.isNull()
    image.save("/tmp/chat.png")


def test_compare_screenshot(qtbot, pane, llama_dir):
    pane.set_compare(True)
    _open(qtbot, pane, llama_dir, 0)
    _open(qtbot, pane, llama_dir, 1)
    _set(pane, SamplingParams(max_tokens=12, seed=5))
    done = []
    pane.reply_finished.connect(lambda side, stats: done.append(side))
    pane.send("hello there")
    qtbot.waitUntil(lambda: len(done) == 2, timeout=WAIT_MS)
    a, b = (pane.conversation(i).turns[1].content for i in (0, 1))
    assert a == b  # same model, same prompt, same seed
    pane.conversation(1).turns.append(Turn("assistant", "<think>open reasoning</think>Shown."))
    pane.conversation(1).expanded.add(2)
    pane.compare_view.views[1].render()
    pane.show()
    pane.grab().save("/tmp/chat_compare.png")


def test_shutdown_while_generating_joins_the_thread(qtbot, llama_dir):
    import time

    pane = ChatPane()
    qtbot.addWidget(pane)
    _open(qtbot, pane, llama_dir)
    _set(pane, SamplingParams(temperature=0.0, max_tokens=100000))
    with qtbot.waitSignal(pane._host.chunk, timeout=WAIT_MS):
        pane.send("hello there")
    start = time.monotonic()
    pane.shutdown()
    assert not pane._host.isRunning()
    assert time.monotonic() - start < 5
    pane.shutdown()  # twice is fine


def test_a_failing_generation_reports_and_the_thread_lives_on(qtbot, pane, llama_dir, monkeypatch):
    import studio.core.runtime.generation as generation

    _open(qtbot, pane, llama_dir)
    _set(pane, SamplingParams(temperature=0.0, max_tokens=4))

    def boom(*args, **kwargs):
        raise RuntimeError("boom")
        yield  # a generator, like the real one

    monkeypatch.setattr(generation, "stream_tokens", boom)
    finished = []
    pane.reply_finished.connect(lambda side, stats: finished.append((side, stats)))
    with qtbot.waitSignals([pane.error, pane.reply_finished], timeout=WAIT_MS):
        pane.send("hello there")
    assert "RuntimeError: boom" in pane.stats_label.text()
    assert finished == [(0, None)] and not pane.busy

    monkeypatch.undo()
    with qtbot.waitSignal(pane.reply_finished, timeout=WAIT_MS) as blocker:
        assert pane.send("hello there")
    assert blocker.args[1].generated_tokens == 4


def test_clear_while_generating_empties_the_chat_at_once(qtbot, pane, llama_dir):
    """Issue 18: Clear during a reply stopped it but left the conversation on screen."""
    _open(qtbot, pane, llama_dir)
    _set(pane, SamplingParams(temperature=0.0, max_tokens=100000))
    with qtbot.waitSignal(pane._host.chunk, timeout=WAIT_MS):
        assert pane.send("hello there")
    pane.clear()
    assert not pane.busy and pane.send_button.isEnabled() and not pane.stop_button.isEnabled()
    assert pane.conversation().turns == [] and pane.conversation().streaming is None
    assert "hello there" not in pane.compare_view.views[0].toPlainText()
    qtbot.wait(300)  # the stopped reply's last chunks and its end arrive, and are dropped
    assert pane.conversation().turns == [] and pane.conversation().streaming is None
    _set(pane, SamplingParams(temperature=0.0, max_tokens=4))
    with qtbot.waitSignal(pane.reply_finished, timeout=WAIT_MS):
        assert pane.send("again")
    assert [t.role for t in pane.conversation().turns] == ["user", "assistant"]


def test_a_superseded_load_is_ignored(qtbot, pane, llama_dir, request, tmp_path):
    """Issue 17: loads carried no request id, so the first of two quick opens could land last's
    label, or a failed first load could say "no model" over the second."""
    moe_dir = tiny_model_dir(request, "qwen3_moe")
    loaded, errors = [], []
    pane.model_loaded.connect(lambda side, text: loaded.append(text))
    pane.error.connect(errors.append)
    pane.open_model(tmp_path / "missing", 0)  # fails on the host, after the next open was asked for
    pane.open_model(llama_dir, 0)
    pane.open_model(moe_dir, 0)
    qtbot.waitUntil(lambda: bool(loaded), timeout=WAIT_MS)
    qtbot.wait(200)
    assert len(loaded) == 1 and "float32" in loaded[0] and errors == []
    assert pane._sides[0].label.text() == loaded[0] and pane._sides[0].path == str(moe_dir)


def test_compare_streams_b_while_a_is_still_replying(qtbot, pane, llama_dir, request):
    """Issue 18: in compare mode B waited for A's whole reply. The sides now take turns token by
    token on the host thread, so B's text arrives before A is done."""
    moe_dir = tiny_model_dir(request, "qwen3_moe")
    pane.set_compare(True)
    _open(qtbot, pane, llama_dir, 0)
    _open(qtbot, pane, moe_dir, 1)
    _set(pane, SamplingParams(temperature=0.0, max_tokens=400, seed=3))
    events = []
    pane._host.chunk.connect(lambda side, rid, text: events.append(("chunk", side)))
    pane._host.reply_done.connect(lambda side, rid, stats: events.append(("done", side)))
    with qtbot.waitSignals([pane._host.reply_done, pane._host.reply_done], timeout=60000):
        assert pane.send("hello there")
    qtbot.waitUntil(lambda: not pane.busy, timeout=WAIT_MS)
    first_done = next(i for i, e in enumerate(events) if e[0] == "done")
    sides_streaming_before = {side for kind, side in events[:first_done] if kind == "chunk"}
    assert sides_streaming_before == {0, 1}, events[:first_done + 1]
    for side in (0, 1):
        assert [t.role for t in pane.conversation(side).turns] == ["user", "assistant"]


def test_another_model_in_the_window_frees_the_chat_models_memory(qtbot, pane, llama_dir):
    import gc

    import mlx.core as mx

    gc.collect()
    before = mx.get_active_memory()
    _open(qtbot, pane, llama_dir)
    held = mx.get_active_memory()
    assert held > before
    pane.model_changed(None)  # the host thread frees it: active memory falls back to what it was
    qtbot.waitUntil(lambda: gc.collect() >= 0 and mx.get_active_memory() <= before + (held - before) // 10,
                    timeout=5000)
