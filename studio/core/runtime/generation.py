"""Chat with a model folder: load it with mlx-lm, stream a reply, measure it.

Qt-free. The command line (`configi-studio chat`) and the chat pane both drive
these functions; the pane runs them on its model-host thread.

Generation goes through mlx-lm's own `stream_generate`, so our tokens/s is
mlx-lm's tokens/s (see `bench/bench_chat.py`). What we add: the chat template
over a multi-turn history and a system prompt, sampling settings in one value,
a cancel token (`studio.core.cancel.CancelToken`) checked on every token and
between prefill chunks, and stats.

How the model computes is `studio.core.runtime.compute_path`'s choice: on MLX's CPU
backend each quantized weight is dequantized once and the model runs in
float32 (the CPU's bfloat16 quantized kernels are slow and imprecise); on
Metal the quantized kernels run as they are.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from studio.core.cancel import CancelToken
from studio.core.check_model import check_model
from studio.core.errors import StudioError
from studio.core.validation.loadable import one_sentence

THINK_START = "<think>"
THINK_END = "</think>"

Message = Mapping[str, str]  # {"role": "user" | "assistant" | "system", "content": str}


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. temperature 0 is greedy; top_k 0 and top_p 1 are off."""

    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 0
    max_tokens: int = 512
    repetition_penalty: float = 1.0  # 1.0 is off
    seed: int | None = None  # None: keep MLX's running random state


@dataclass(frozen=True)
class GenerationStats:
    prompt_tokens: int
    generated_tokens: int
    ttft_s: float  # call to first token, prefill included
    tokens_per_s: float  # decode speed, as mlx-lm reports it
    peak_memory_gb: float
    finish_reason: str  # "stop" (end of turn), "length" (max tokens) or "cancelled"
    elapsed_s: float

    def summary(self) -> str:
        return (
            f"TTFT {self.ttft_s * 1000:.0f} ms · {self.tokens_per_s:.1f} tok/s · "
            f"{self.generated_tokens} tokens · peak {format_gb(self.peak_memory_gb)} · {self.finish_reason}"
        )


def format_gb(gb: float) -> str:
    if gb >= 1:
        return f"{gb:.2f} GB"
    return f"{gb * 1000:.0f} MB" if gb >= 0.01 else f"{gb * 1000:.1f} MB"


@dataclass(frozen=True)
class ReplyChunk:
    """A piece of streamed text; the last chunk of a reply carries the stats."""

    text: str
    stats: GenerationStats | None = None


@dataclass
class LoadedModel:
    path: Path
    model: object = field(repr=False)
    tokenizer: object = field(repr=False)
    config: dict = field(repr=False)
    compute_path: str = "?"  # see studio.core.runtime.compute_path
    quantization: str = "unquantized"  # the real mix, e.g. "Config-I: 2/3/4/8-bit, 3.10 bpw"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def think_tags(self) -> tuple[str, str]:
        start = getattr(self.tokenizer, "think_start", None) or THINK_START
        end = getattr(self.tokenizer, "think_end", None) or THINK_END
        return start, end

    def describe(self) -> str:
        """"name (model type, Config-I: 2/3/4/8-bit, 3.10 bpw; dequantized to float32)"."""
        kind = self.config.get("model_type", "?")
        how = {"dequantized_float32": "dequantized to float32", "quantized_kernels": "quantized kernels"}
        return f"{self.name} ({kind}, {self.quantization}; {how.get(self.compute_path, self.compute_path)})"


# --- loading -----------------------------------------------------------------


def _check_folder(path: Path) -> dict:
    if not path.exists():
        raise StudioError(f"Model folder {path} does not exist.")
    if not path.is_dir():
        raise StudioError(f"{path} is not a folder; give the folder that holds config.json.")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise StudioError(f"{path} is not a model folder: it has no config.json.")
    if not any(path.glob("*.safetensors")):
        raise StudioError(f"{path} has no .safetensors weights, so MLX cannot load it.")
    try:
        return json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise StudioError(f"{config_path} is not readable JSON ({exc}).") from exc


def load_model(path: str | Path, compute: str = "auto") -> LoadedModel:
    """Load an MLX or Hugging Face model folder and set it up to compute as ``compute`` says."""
    path = Path(path).expanduser().resolve()
    check_model(path, loadable=True)  # the studio's own checks first: mlx-lm never sees a folder they refuse
    config = _check_folder(path)

    from mlx_lm import load

    from studio.core.runtime import compute_path
    from studio.core.runtime import quant_summary

    try:
        model, tokenizer, config = load(str(path), return_config=True)
    except Exception as exc:  # mlx-lm and transformers raise many kinds; the user gets one sentence
        model_type = config.get("model_type", "unknown")
        raise StudioError(f"mlx-lm cannot load {path.name} (model_type {model_type!r}): {one_sentence(exc)}.") from None

    quantization = quant_summary.describe(model, path)  # before any dequantizing
    how = compute_path.prepare(model, compute)
    return LoadedModel(path=path, model=model, tokenizer=tokenizer, config=config, compute_path=how,
                       quantization=quantization)


# --- prompts -----------------------------------------------------------------


def chat_messages(history: Sequence[Message], system: str | None = None) -> list[dict]:
    messages = [{"role": "system", "content": system}] if system and system.strip() else []
    messages += [{"role": m["role"], "content": m["content"]} for m in history]
    return messages


def build_prompt(tokenizer, history: Sequence[Message], system: str | None = None) -> list[int]:
    """Token ids for the chat so far with the assistant's turn opened."""
    messages = chat_messages(history, system)
    if getattr(tokenizer, "has_chat_template", False):
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    # No template: a plain transcript the model can continue.
    text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages) + "Assistant:"
    return list(tokenizer.encode(text))


def prompt_opens_think(loaded: LoadedModel, prompt: Sequence[int]) -> bool:
    """True if the template already opened a think block, so the reply starts inside it."""
    start, _ = loaded.think_tags
    tail = loaded.tokenizer.decode(list(prompt[-(len(start) + 8):]))  # enough even byte by byte
    return tail.rstrip().endswith(start)


# --- generation --------------------------------------------------------------


class _Cancelled(Exception):
    pass


class _SeededSampler:
    """mlx-lm's sampler (top-p, then top-k, then a categorical draw) with a random key of its own.

    mlx-lm's draws from MLX's one global key, so two replies that take turns on one thread
    (compare mode) would share it and neither would get the tokens its seed gives. Splitting its
    own key as the global one is split, this draws exactly what mlx-lm draws after
    ``mx.random.seed(seed)``, whatever else runs between its tokens."""

    def __init__(self, params: SamplingParams):
        import mlx.core as mx

        self.params = params
        self.key = mx.random.key(params.seed)

    def __call__(self, logprobs):
        import mlx.core as mx
        from mlx_lm.sample_utils import apply_top_k, apply_top_p

        if 0 < self.params.top_p < 1.0:
            logprobs = apply_top_p(logprobs, self.params.top_p)
        if self.params.top_k > 0:
            logprobs = apply_top_k(logprobs, self.params.top_k)
        self.key, draw = mx.random.split(self.key)
        return mx.random.categorical(logprobs * (1.0 / self.params.temperature), key=draw)


def make_sampling(params: SamplingParams):
    """(sampler, logits_processors) for mlx-lm from our settings."""
    from mlx_lm.sample_utils import make_logits_processors, make_sampler

    if params.temperature > 0 and params.seed is not None:
        sampler = _SeededSampler(params)
    else:
        sampler = make_sampler(temp=params.temperature, top_p=params.top_p, top_k=params.top_k)
    penalty = params.repetition_penalty if params.repetition_penalty not in (None, 1.0) else None
    return sampler, make_logits_processors(repetition_penalty=penalty)


def stream_tokens(
    loaded: LoadedModel,
    prompt: Sequence[int],
    params: SamplingParams = SamplingParams(),
    *,
    cancel: CancelToken | None = None,
) -> Iterator[ReplyChunk]:
    """Stream the reply to already-tokenized `prompt`; the last chunk has the stats."""
    if params.max_tokens < 1:
        raise StudioError("max tokens must be at least 1.")
    import mlx.core as mx
    from mlx_lm import stream_generate

    cancel = cancel or CancelToken()
    if params.seed is not None:
        mx.random.seed(params.seed)
    sampler, processors = make_sampling(params)
    mx.reset_peak_memory()

    def check_cancel(_done: int, _total: int) -> None:
        if cancel.cancelled:
            raise _Cancelled

    started = time.perf_counter()
    ttft = None
    last = None
    finish = "cancelled"
    generator = stream_generate(
        loaded.model,
        loaded.tokenizer,
        mx.array(list(prompt)),
        max_tokens=params.max_tokens,
        sampler=sampler,
        logits_processors=processors,
        prompt_progress_callback=check_cancel,
    )
    try:
        for response in generator:
            if ttft is None:
                ttft = time.perf_counter() - started
            last = response
            if response.finish_reason is not None:
                finish = response.finish_reason
            if response.text:
                yield ReplyChunk(response.text)
            if cancel.cancelled and response.finish_reason is None:
                break
    except _Cancelled:
        pass
    finally:
        generator.close()

    elapsed = time.perf_counter() - started
    yield ReplyChunk(
        "",
        GenerationStats(
            prompt_tokens=len(prompt),
            generated_tokens=last.generation_tokens if last else 0,
            ttft_s=ttft if ttft is not None else elapsed,
            tokens_per_s=last.generation_tps if last else 0.0,
            peak_memory_gb=mx.get_peak_memory() / 1e9,
            finish_reason=finish,
            elapsed_s=elapsed,
        ),
    )


def stream_reply(
    loaded: LoadedModel,
    history: Sequence[Message],
    params: SamplingParams = SamplingParams(),
    *,
    system: str | None = None,
    cancel: CancelToken | None = None,
) -> Iterator[ReplyChunk]:
    """Stream the assistant's next turn for a multi-turn `history` (last item: the user)."""
    if not history or history[-1]["role"] != "user":
        raise StudioError("The chat history must end with a user message.")
    prompt = build_prompt(loaded.tokenizer, history, system)
    yield from stream_tokens(loaded, prompt, params, cancel=cancel)


def reply(
    loaded: LoadedModel,
    history: Sequence[Message],
    params: SamplingParams = SamplingParams(),
    *,
    system: str | None = None,
    cancel: CancelToken | None = None,
) -> tuple[str, GenerationStats]:
    """The whole reply at once (the streamed chunks joined) and its stats."""
    parts: list[str] = []
    stats = None
    for chunk in stream_reply(loaded, history, params, system=system, cancel=cancel):
        parts.append(chunk.text)
        stats = chunk.stats or stats
    return "".join(parts), stats


# --- reasoning ---------------------------------------------------------------


@dataclass(frozen=True)
class ThinkSplit:
    answer: str  # what the user should read
    thinking: str  # the reasoning, blocks joined by blank lines
    thinking_open: bool  # a think block is still streaming (not closed yet)


def _strip_partial_tag(text: str, tags: Sequence[str]) -> str:
    """Drop a tag cut off at the end of streamed text ("...<thi")."""
    for tag in tags:
        for n in range(len(tag) - 1, 0, -1):
            if text.endswith(tag[:n]):
                return text[: -n]
    return text


def split_thinking(
    text: str,
    *,
    starts_inside: bool = False,
    streaming: bool = False,
    tags: tuple[str, str] = (THINK_START, THINK_END),
) -> ThinkSplit:
    """Split `text` into the visible answer and its `<think>...</think>` reasoning.

    Robust to streaming: an unclosed block counts as reasoning in progress, and a
    close tag with no open tag (the template opened it: `starts_inside`, or it
    was cut off) makes everything before it reasoning.
    """
    start, end = tags
    answer: list[str] = []
    thinking: list[str] = []
    rest = text
    inside = starts_inside
    if not inside:
        first_start, first_end = rest.find(start), rest.find(end)
        inside = first_end != -1 and (first_start == -1 or first_end < first_start)
    while rest:
        if inside:
            close = rest.find(end)
            if close == -1:
                block = _strip_partial_tag(rest, [end]) if streaming else rest
                thinking.append(block)
                return ThinkSplit("".join(answer).strip(), _join(thinking), True)
            thinking.append(rest[:close])
            rest = rest[close + len(end):]
            inside = False
        else:
            open_ = rest.find(start)
            if open_ == -1:
                answer.append(_strip_partial_tag(rest, [start]) if streaming else rest)
                break
            answer.append(rest[:open_])
            rest = rest[open_ + len(start):]
            inside = True
            if not rest:
                return ThinkSplit("".join(answer).strip(), _join(thinking), True)
    return ThinkSplit("".join(answer).strip(), _join(thinking), inside)


def _join(blocks: list[str]) -> str:
    return "\n\n".join(b.strip() for b in blocks if b.strip())
