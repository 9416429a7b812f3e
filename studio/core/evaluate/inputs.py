"""What an evaluation reads: the text, its tokens, the windows they are cut into, the model folders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from studio.core.bundled import resource
from studio.core.errors import StudioError
from studio.core.validation.files import read_text as read_text_file
from studio.core.evaluate.defaults import MIN_CONTEXT, SAMPLE_NAME


def sample_text_path() -> Path:
    """The bundled evaluation text (package data)."""
    return Path(str(resource(SAMPLE_NAME)))


def read_text(text_path: str | os.PathLike | None) -> tuple[str, str]:
    """(text, label): the user's file, or the bundled sample when ``text_path`` is None."""
    path = Path(text_path) if text_path is not None else sample_text_path()
    label = str(path) if text_path is not None else "the bundled sample text"
    if not path.exists():
        if text_path is None:
            raise StudioError("The bundled evaluation text is missing from this installation; pass --text FILE.")
        raise StudioError(f"The text file {path} does not exist.")
    text = read_text_file(path, "the text file")
    return text, label


def make_windows(n_tokens: int, context: int) -> list[tuple[int, int]]:
    """Non-overlapping [start, stop) windows of ``context`` tokens.

    A last, partial window is kept when it holds at least half a context (short
    windows predict with little context and would bias perplexity upward),
    or when it is the only window.
    """
    if context < MIN_CONTEXT:
        raise StudioError(f"The context must be at least {MIN_CONTEXT} tokens, not {context}.")
    windows = [(s, s + context) for s in range(0, n_tokens - context + 1, context)]
    covered = windows[-1][1] if windows else 0
    rest = n_tokens - covered
    if rest >= 2 and (rest >= context // 2 or not windows):
        windows.append((covered, n_tokens))
    return windows


def encode(tokenizer, text: str, max_tokens: int) -> np.ndarray:
    """The first ``max_tokens`` token ids of ``text``.

    Only a prefix of a long text is encoded (16 characters a token is generous;
    the whole text is encoded if the prefix falls short). ``verbose=False``
    silences Hugging Face's "longer than the maximum sequence length" notice:
    we cut the ids into windows ourselves.
    """
    def encode_all(t: str):
        try:
            return tokenizer.encode(t, verbose=False)
        except TypeError:  # a tokenizer without Hugging Face's keyword
            return tokenizer.encode(t)

    prefix = text[: max_tokens * 16]
    ids = encode_all(prefix)
    if len(ids) < max_tokens and len(prefix) < len(text):
        ids = encode_all(text)
    return np.asarray(ids, dtype=np.int64)[:max_tokens]


def check_folder(path: str | os.PathLike, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise StudioError(f"The {what} model folder {p} does not exist.")
    if not (p / "config.json").is_file():
        raise StudioError(f"The {what} folder {p} is not a model folder: it has no config.json.")
    if not any(p.glob("*.safetensors")):
        raise StudioError(f"The {what} folder {p} has no .safetensors weights.")
    return p


def load_tokenizer(path: str | os.PathLike, what: str = "reference"):
    from mlx_lm.utils import load_tokenizer as _load_tokenizer

    p = check_folder(path, what)
    try:
        return _load_tokenizer(p)
    except (OSError, ValueError, KeyError) as exc:
        raise StudioError(f"The tokenizer of the {what} model in {p} could not be loaded ({exc}).") from None
