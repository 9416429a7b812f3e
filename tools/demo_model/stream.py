"""The token stream trained on: the novels in chunks, mixed with chat-shaped samples."""

from __future__ import annotations

import random

import numpy as np

USER_PROMPTS = [
    "Tell me a story.",
    "Tell me a story about a family.",
    "Write a paragraph in the style of an old English novel.",
    "What happened next?",
    "Please go on.",
    "Describe the evening.",
    "Tell me about the young lady.",
    "Write something about love and marriage.",
    "Hello! Can you write a few sentences for me?",
    "What did she think of him?",
    "Tell me about the visit.",
    "Write a short passage about a letter.",
]


def build_stream(train: dict[str, list[str]], tok, seed: int) -> np.ndarray:
    """Token stream: the novels in chunks, mixed with chat-shaped samples."""
    rng = random.Random(seed)
    eot = tok.token_to_id("<|endoftext|>")
    docs: list[str] = []
    for paras in train.values():
        i = 0
        while i < len(paras):
            n = rng.randint(4, 12)
            docs.append(("plain", "\n\n".join(paras[i : i + n])))
            i += n
        for j, p in enumerate(paras):
            if not 120 <= len(p) <= 900 or rng.random() > 0.35:
                continue
            r = rng.random()
            if r < 0.25 and j > 0:
                words = p.split()
                k = min(len(words) // 3, rng.randint(4, 10))
                user = "Continue this: " + " ".join(words[:k])
                answer = " ".join(words[k:])
            else:
                user = rng.choice(USER_PROMPTS)
                answer = p
            turns = ""
            if rng.random() < 0.3:
                turns += "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            turns += f"<|im_start|>user\n{user}<|im_end|>\n"
            turns += f"<|im_start|>assistant\n{answer}<|im_end|>\n"
            docs.append(("chat", turns))
    rng.shuffle(docs)
    ids: list[int] = []
    for kind, text in docs:
        ids.extend(tok.encode(text).ids)
        ids.append(eot)
    n_chat = sum(1 for k, _ in docs if k == "chat")
    print(f"documents: {len(docs)} ({n_chat} chat), tokens: {len(ids)}", flush=True)
    return np.asarray(ids, dtype=np.int32)
