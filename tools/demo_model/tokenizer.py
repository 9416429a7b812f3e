"""The demo tokenizer: byte-level BPE with ChatML-style special tokens, and the word list
the demo-model test checks generated text against."""

from __future__ import annotations

import json
import re
from pathlib import Path

from demo_model.stream import USER_PROMPTS

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 4096
MAX_POSITIONS = 4096
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def write_word_list(train: dict[str, list[str]], path: Path) -> int:
    """Lower-cased words seen at least twice in the training text, one a line.

    tests/test_demo_model.py checks that generated text is made of these."""
    from collections import Counter

    counts = Counter(
        w.strip("'").lower()
        for ps in train.values()
        for p in ps
        for w in re.findall(r"[A-Za-z']+", p)
    )
    words = sorted(w for w, c in counts.items() if c >= 2 and w)
    path.write_text("\n".join(words) + "\n")
    return len(words)


# ---------------------------------------------------------------- tokenizer


def train_tokenizer(train: dict[str, list[str]], out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    texts = ["\n\n".join(p) for p in train.values()]
    texts += [f"{p}\n" for p in USER_PROMPTS] * 50 + [
        "user\n",
        "assistant\n",
        "system\n",
    ] * 50
    tok.train_from_iterator(texts, trainer=trainer)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "model_max_length": MAX_POSITIONS,
                "bos_token": None,
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "unk_token": None,
                "add_bos_token": False,
                "add_eos_token": False,
                "clean_up_tokenization_spaces": False,
                "chat_template": CHAT_TEMPLATE,
                "added_tokens_decoder": {
                    str(tok.token_to_id(t)): {
                        "content": t,
                        "lstrip": False,
                        "rstrip": False,
                        "normalized": False,
                        "single_word": False,
                        "special": True,
                    }
                    for t in SPECIAL_TOKENS
                },
            },
            indent=2,
        )
        + "\n"
    )
    return tok


def copy_tokenizer(src: Path, out: Path):
    """Reuse an existing tokenizer and word list (byte-identical copies)."""
    import shutil

    from tokenizers import Tokenizer

    for name in ("tokenizer.json", "tokenizer_config.json", "words.txt"):
        if (src / name).resolve() != (out / name).resolve():
            shutil.copyfile(src / name, out / name)
    return Tokenizer.from_file(str(out / "tokenizer.json"))
