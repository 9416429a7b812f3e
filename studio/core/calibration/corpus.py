"""Calibration text: the bundled mixed corpus or the user's file, cut into token sequences.

The bundled corpus (studio/resources/calibration/, sources and licences in its
README) shares nothing with the evaluation sample, so a calibrated model is
evaluated on text it was not calibrated on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from studio.core.bundled import resource
from studio.core.errors import StudioError
from studio.core.validation.files import read_text as read_text_file

DEFAULT_SEQUENCES = 32
DEFAULT_LENGTH = 256
# Learned roundings fit the calibration tokens: on the Austen-trained Mixtral (4-bit g64, 200 steps a
# layer, bench/bench_calibration_methods.py) 16 sequences of 256 scored KL 0.00420, worse than GPTQ's
# 0.00393; 32 scored 0.00353 and 64 scored 0.00332. So this method reads twice the gptq pass's text
# (each step still trains on `LearnSettings.batch` sequences; only the streamed passes grow).
LEARNED_TEXT_FACTOR = 2
# Below this many tokens a pass fits the text it was given more than the model's general use (the
# default pass reads 32 x 256 = 8,192): the user hears so, and the pass still runs (a short text of
# the user's own domain can be what they want).
FEW_TOKENS = 1024
BUNDLED_LABEL = "the bundled calibration corpus (prose, chat, code, other languages)"


def bundled_corpus_path() -> Path:
    return Path(str(resource("calibration", "corpus.txt")))


@dataclass(frozen=True)
class Corpus:
    tokens: np.ndarray  # int32 [sequences, length]
    label: str  # what the report and model card say was used
    digest: str  # text and cut, for the cache key


def read_corpus_text(path: str | Path | None) -> tuple[str, str]:
    """(text, label) of the user's file, or of the bundled corpus when `path` is None."""
    file = Path(path).expanduser() if path is not None else bundled_corpus_path()
    label = str(file) if path is not None else BUNDLED_LABEL
    text = read_text_file(file, "the calibration text")
    return text, label


def tokenize(tokenizer, text: str, label: str, sequences: int = DEFAULT_SEQUENCES,
             length: int = DEFAULT_LENGTH) -> Corpus:
    """Up to `sequences` consecutive sequences of `length` tokens (fewer when the text is short)."""
    try:  # verbose=False: we cut the ids into sequences ourselves; no "too long" notice
        ids = tokenizer.encode(text, verbose=False)
    except TypeError:  # a tokenizer without Hugging Face's keyword
        ids = tokenizer.encode(text)
    ids = np.asarray(ids, dtype=np.int32)
    if ids.size < 2:
        raise StudioError(f"{label} holds too little text to calibrate with.")
    length = min(length, ids.size)
    count = max(1, min(sequences, ids.size // length))
    tokens = ids[: count * length].reshape(count, length)
    digest = hashlib.sha256(tokens.tobytes() + f"{count}x{length}".encode()).hexdigest()
    return Corpus(tokens, label, digest)


def load_corpus(model_root: Path, path: str | Path | None = None, sequences: int = DEFAULT_SEQUENCES,
                length: int = DEFAULT_LENGTH) -> Corpus:
    from mlx_lm.utils import load_tokenizer

    text, label = read_corpus_text(path)
    try:
        tokenizer = load_tokenizer(Path(model_root))
    except Exception as exc:
        raise StudioError(f"the tokenizer of {model_root} could not be loaded to calibrate ({exc}).") from None
    return tokenize(tokenizer, text, label, sequences, length)


def few_tokens_warning(tokens: int, label: str) -> str | None:
    """A sentence for the user when `label` gave too few tokens to calibrate on well; else None."""
    if tokens >= FEW_TOKENS:
        return None
    return (f"{label} gave only {tokens:,} tokens to calibrate on (a pass reads {DEFAULT_SEQUENCES * DEFAULT_LENGTH:,} "
            f"or more when the text is long enough); the quantization fits that text closely and may do worse on "
            f"other text. A longer file, or none for the bundled corpus, is safer.")
