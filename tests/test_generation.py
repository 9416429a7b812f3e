"""Generation core and the `chat` command, on tiny real-weight models on CPU."""

from __future__ import annotations

import pytest

from studio.core.cancel import CancelToken
from studio.core.runtime.compute_path import has_unquantized_experts
from studio.core.errors import StudioError
from studio.core.runtime.generation import (
    SamplingParams,
    build_prompt,
    load_model,
    prompt_opens_think,
    reply,
    split_thinking,
    stream_reply,
    stream_tokens,
)
from studio.main import main

GREEDY = SamplingParams(temperature=0.0, max_tokens=24)
USER = [{"role": "user", "content": "hello there"}]


# --- models ------------------------------------------------------------------


def tiny_model_dir(request, arch: str):
    """A tiny bf16 HF-layout model from the shared session fixture (built once)."""
    return request.getfixturevalue("tiny_model")(arch)


@pytest.fixture(scope="module")
def llama(request):
    return load_model(tiny_model_dir(request, "llama"))


@pytest.fixture(scope="module")
def moe(request):
    return load_model(tiny_model_dir(request, "qwen3_moe"))


def _mlx_reference(loaded, prompt, params: SamplingParams) -> str:
    """mlx-lm's own generate() on the same model, prompt and sampling."""
    import mlx.core as mx
    from mlx_lm import generate

    from studio.core.runtime.generation import make_sampling

    sampler, processors = make_sampling(params)
    if params.seed is not None:
        mx.random.seed(params.seed)
    return generate(
        loaded.model, loaded.tokenizer, mx.array(prompt), max_tokens=params.max_tokens,
        sampler=sampler, logits_processors=processors,
    )


# --- think splitting ---------------------------------------------------------


@pytest.mark.parametrize(
    "text, streaming, answer, thinking, open_",
    [
        ("plain answer", False, "plain answer", "", False),
        ("<think>why</think>because", False, "because", "why", False),
        ("<think>still thinking", True, "", "still thinking", True),
        ("<think>cut</thi", True, "", "cut", True),  # close tag half streamed
        ("answer <thi", True, "answer", "", False),  # open tag half streamed
        ("reasoned</think>done", False, "done", "reasoned", False),  # template opened the block
        ("<think>", True, "", "", True),
        ("a<think>x</think>b<think>y</think>c", False, "abc", "x\n\ny", False),
        ("a < b", False, "a < b", "", False),
    ],
)
def test_split_thinking(text, streaming, answer, thinking, open_):
    split = split_thinking(text, streaming=streaming)
    assert (split.answer, split.thinking, split.thinking_open) == (answer, thinking, open_)


def test_split_thinking_when_the_prompt_opened_the_block():
    assert split_thinking("", starts_inside=True).thinking_open
    split = split_thinking("step one", starts_inside=True, streaming=True)
    assert (split.answer, split.thinking, split.thinking_open) == ("", "step one", True)


# --- generation --------------------------------------------------------------


def test_streamed_greedy_reply_equals_mlx_lm_generate(llama):
    prompt = build_prompt(llama.tokenizer, USER)
    chunks = list(stream_tokens(llama, prompt, GREEDY))
    text = "".join(c.text for c in chunks)
    assert text and text == _mlx_reference(llama, prompt, GREEDY)
    assert len([c for c in chunks if c.text]) > 1  # it really streamed
    stats = chunks[-1].stats
    assert stats is not None and all(c.stats is None for c in chunks[:-1])
    assert stats.prompt_tokens == len(prompt)
    assert stats.generated_tokens == GREEDY.max_tokens and stats.finish_reason == "length"
    assert stats.ttft_s > 0 and stats.tokens_per_s > 0 and stats.peak_memory_gb > 0


def test_seeded_sampling_is_reproducible_and_matches_mlx_lm(llama):
    params = SamplingParams(temperature=1.0, top_p=0.95, top_k=50, max_tokens=20, seed=7)
    first, _ = reply(llama, USER, params)
    second, _ = reply(llama, USER, params)
    other, _ = reply(llama, USER, SamplingParams(max_tokens=20, seed=8))
    assert first == second
    assert first != other
    assert first == _mlx_reference(llama, build_prompt(llama.tokenizer, USER), params)


def test_history_and_system_prompt_reach_the_template(llama):
    history = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]
    text = llama.tokenizer.decode(build_prompt(llama.tokenizer, history, system="be terse"))
    order = [text.index(s) for s in ("be terse", "first question", "first answer", "second question")]
    assert order == sorted(order)
    with pytest.raises(StudioError):
        list(stream_reply(llama, history[:2], GREEDY))  # must end with the user


def thinking_model_dir(request, tmp_path):
    """The tiny llama with a template that opens `<think>` for the reply (as Qwen3, MiniMax do)."""
    import json
    import shutil

    folder = shutil.copytree(tiny_model_dir(request, "llama"), tmp_path / "thinking")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = config["chat_template"].replace("assistant\\n'", "assistant\\n<think>\\n'")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def test_a_template_that_opens_a_think_block_is_detected(request, llama, tmp_path):
    assert not prompt_opens_think(llama, build_prompt(llama.tokenizer, USER))
    thinking = load_model(thinking_model_dir(request, tmp_path))
    prompt = build_prompt(thinking.tokenizer, USER)
    assert thinking.tokenizer.decode(prompt).endswith("<think>\n")
    assert prompt_opens_think(thinking, prompt)


def test_cancel_ends_generation_mid_reply(llama):
    cancel = CancelToken()
    params = SamplingParams(temperature=0.0, max_tokens=400)
    seen = 0
    stats = None
    for chunk in stream_reply(llama, USER, params, cancel=cancel):
        seen += bool(chunk.text)
        if seen == 3:
            cancel.cancel()
        stats = chunk.stats or stats
    assert stats.finish_reason == "cancelled"
    assert 3 <= stats.generated_tokens < 10 < params.max_tokens


def test_cancel_before_start_generates_nothing(llama):
    cancel = CancelToken()
    cancel.cancel()
    text, stats = reply(llama, USER, GREEDY, cancel=cancel)
    assert stats.finish_reason == "cancelled" and stats.generated_tokens <= 1


def test_repetition_penalty_changes_greedy_output(llama):
    plain, _ = reply(llama, USER, SamplingParams(temperature=0.0, max_tokens=40))
    penalised, _ = reply(llama, USER, SamplingParams(temperature=0.0, max_tokens=40, repetition_penalty=1.5))
    assert plain != penalised


def test_unquantized_moe_generates_on_cpu_thanks_to_the_cast(request, moe):
    import mlx.core as mx
    from mlx_lm import generate, load

    assert moe.compute_path == "float32" and not has_unquantized_experts(moe.model)
    text, stats = reply(moe, USER, SamplingParams(max_tokens=12, seed=1))
    assert text and stats.generated_tokens > 0

    # Without the cast, MLX's CPU gather_mm refuses the bf16 experts.
    raw_model, tokenizer = load(str(tiny_model_dir(request, "qwen3_moe")))
    assert has_unquantized_experts(raw_model)
    with pytest.raises(RuntimeError, match="float32"):
        generate(raw_model, tokenizer, mx.array(build_prompt(tokenizer, USER)), max_tokens=2)


def test_quantized_experts_need_no_cast(request):
    import mlx.nn as nn
    from mlx_lm import load

    model, _ = load(str(tiny_model_dir(request, "qwen3_moe")))
    nn.quantize(model, group_size=32, bits=4)
    assert not has_unquantized_experts(model)


def test_load_errors_are_one_sentence(tmp_path):
    with pytest.raises(StudioError, match="does not exist"):
        load_model(tmp_path / "missing")
    with pytest.raises(StudioError, match="no config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "no_such_arch", "num_hidden_layers": 2}')
    with pytest.raises(StudioError, match="safetensors"):
        load_model(tmp_path)


# --- the command -------------------------------------------------------------


def test_chat_command_prints_the_reply(request, llama, capsys):
    path = str(tiny_model_dir(request, "llama"))
    rc = main(["chat", path, "-p", "hello there", "--temp", "0", "--max-tokens", "24"])
    out, err = capsys.readouterr()
    expected, _ = reply(llama, USER, GREEDY)
    assert rc == 0
    assert out == expected + "\n"
    assert "tok/s" in err and "TTFT" in err


def test_chat_command_interactive_keeps_history(request, llama, capsys, monkeypatch):
    import io

    path = str(tiny_model_dir(request, "llama"))
    monkeypatch.setattr("sys.stdin", io.StringIO("hello there\nand again\n/exit\nnever sent\n"))
    rc = main(["chat", path, "--temp", "0", "--max-tokens", "6", "--system", "be brief"])
    out, err = capsys.readouterr()
    params = SamplingParams(temperature=0.0, max_tokens=6)
    first, _ = reply(llama, USER, params, system="be brief")
    history = USER + [{"role": "assistant", "content": first}, {"role": "user", "content": "and again"}]
    second, _ = reply(llama, history, params, system="be brief")
    assert rc == 0
    assert out == f"{first}\n{second}\n"  # the second turn saw the first; nothing after /exit
    assert err.count("tok/s") == 2


def test_chat_command_bad_model_is_a_clear_error(tmp_path, capsys):
    assert main(["chat", str(tmp_path / "nope"), "-p", "hi"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_seeded_sampler_draws_what_mlx_lm_draws_with_its_own_key():
    """Compare mode interleaves two replies on one thread: each seeded reply samples from a key of
    its own (not MLX's global one), and draws exactly what mlx-lm's sampler draws after seeding."""
    import mlx.core as mx
    from mlx_lm.sample_utils import make_sampler

    from studio.core.runtime.generation import make_sampling

    logits = mx.random.normal((1, 64), key=mx.random.key(1))
    logprobs = logits - mx.logsumexp(logits, keepdims=True)
    params = SamplingParams(temperature=0.8, top_p=0.9, top_k=20, seed=5)
    mx.random.seed(5)
    plain = make_sampler(temp=0.8, top_p=0.9, top_k=20)
    expected = [plain(logprobs).item() for _ in range(12)]
    ours, _ = make_sampling(params)
    other, _ = make_sampling(params)
    drawn = []
    for _ in range(12):
        drawn.append(ours(logprobs).item())
        other(logprobs)  # the other side's turn in between
        mx.random.uniform(shape=(3,))  # and anyone's use of the global key
    assert drawn == expected
