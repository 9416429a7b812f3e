"""A small byte-level BPE tokenizer, built offline with the `tokenizers` library.

256 byte tokens (GPT-2's byte-to-unicode alphabet, so any text encodes), a
handful of merges so it is a real BPE, and three ChatML special tokens. The
model's vocab_size is larger than this, as in real checkpoints that pad the
embedding table.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS = "<|im_end|>"

# ChatML, the shape most MoE chat models use (Qwen, MiniMax-M2 differ in
# details the studio does not care about); `add_generation_prompt` supported.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_MERGE_PAIRS = ["t h", "th e", "i n", "e r", "a n", "o n", "r e", "Ġ t", "Ġ the", "Ġ a"]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode mapping (what ByteLevel expects)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def build_tokenizer() -> Tokenizer:
    alphabet = _bytes_to_unicode()
    vocab = {ch: i for i, ch in enumerate(alphabet[b] for b in range(256))}
    merges = []
    for pair in _MERGE_PAIRS:
        a, b = pair.split(" ")
        merges.append((a, b))
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    return tok


def write_tokenizer(folder: Path) -> dict[str, int]:
    """Write tokenizer.json + tokenizer_config.json; return the special token ids."""
    tok = build_tokenizer()
    tok.save(str(folder / "tokenizer.json"))
    ids = {s: tok.token_to_id(s) for s in SPECIALS}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": EOS,
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "model_max_length": 4096,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {
            str(ids[s]): {"content": s, "lstrip": False, "rstrip": False, "normalized": False,
                          "single_word": False, "special": True}
            for s in SPECIALS
        },
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"eos_token": EOS, "pad_token": "<|endoftext|>"}, indent=2) + "\n")
    return ids
