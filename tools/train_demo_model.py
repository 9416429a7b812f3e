"""Build the bundled demo model: a tiny MiniMax-M3 (``minimax_m3_vl``, text only).

Run by hand (not by tests or CI; it needs the network to the Debian archive
and about 45 minutes of CPU):

    python tools/train_demo_model.py --out studio/resources/demo_model \
        --tokenizer-from studio/resources/demo_model --minutes 40

``--layers`` and ``--hidden`` set the size (default: 8 layers, hidden 128);
``--tokenizer-from DIR`` reuses the tokenizer and word list in DIR instead of
training new ones, so a retrained model keeps the shipped tokenizer.

On Linux, MLX's CPU wheel links the reference (netlib) BLAS; preloading
OpenBLAS makes training about four times faster (Debian: ``apt-get install
libopenblas0-pthread``, then run with
``LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0``).

Data source
-----------
Debian package ``r-cran-janeaustenr`` version ``1.0.0-1`` (Debian main,
``apt-get download r-cran-janeaustenr``), the R data package "janeaustenr"
1.0.0 by Julia Silge. Files used: ``usr/lib/R/site-library/janeaustenr/data/
Rdata.rdx`` and ``Rdata.rdb`` (R lazy-load data base), which hold the full
texts of Jane Austen's six novels as character vectors, one line each:
"Sense and Sensibility" (1811), "Pride and Prejudice" (1813), "Mansfield
Park" (1814), "Emma" (1815), "Northanger Abbey" and "Persuasion" (1817), as
transcribed by Project Gutenberg. Licence: the novels are in the public
domain (Jane Austen died in 1817); the package's own code and packaging are
MIT (Debian copyright file). ``tools/rlazyload.py`` reads the R format, so R
is not needed.

What it does
------------
1. Fetches the .deb (``apt-get download``; or ``--deb PATH`` for a copy you
   already have), unpacks it in Python and reads the six novels.
2. Joins lines into paragraphs, drops chapter headings and Gutenberg's
   ``_italic_`` marks. The last ~45 KB of "Persuasion" is held out as
   ``studio/resources/eval_sample.txt``; nothing of it is trained on.
3. Trains (unless ``--tokenizer-from``) a byte-level BPE tokenizer
   (``tokenizers``, vocab 4096) with ``<|endoftext|>``, ``<|im_start|>``,
   ``<|im_end|>`` and a ChatML-style chat template (eos ``<|im_end|>``), and
   ``words.txt``: the words that occur at least twice in the training text
   (the demo-model test checks generated text against it).
4. Trains ``mlx_lm.models.minimax_m3_vl.Model`` in float32 on the CPU
   (AdamW, next-token cross-entropy, sequence length 128) on the novels plus
   chat-shaped samples (a user turn, then a paragraph of Austen as the
   assistant's answer) so the chat template leads somewhere sensible.
   Experts are kept busy with auxiliary-loss-free balancing: the router's
   ``e_score_correction_bias`` is nudged toward under-used experts, as the
   real MiniMax / DeepSeek-V3 routers are trained.
5. Writes the Hugging Face checkpoint layout of the real MiniMax-M3 release
   (the inverse of mlx-lm's ``sanitize``): ``language_model.model.*`` and
   ``language_model.lm_head``, per-expert ``experts.E.{w1,w3,w2}``, bf16
   except the router ``gate`` and ``e_score_correction_bias`` (F32), one
   ``model.safetensors``, plus config.json, generation_config.json,
   tokenizer.json, tokenizer_config.json and a README.
6. Reloads the folder with ``mlx_lm.load``, casts to float32 and prints chat
   samples and the held-out perplexity.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rlazyload import read_lazyload

DEB_NAME = "r-cran-janeaustenr"
DEB_VERSION = "1.0.0-1"
DATA_DIR = "usr/lib/R/site-library/janeaustenr/data/"
BOOKS = [  # R object name, title; training order
    ("sensesensibility", "Sense and Sensibility"),
    ("prideprejudice", "Pride and Prejudice"),
    ("mansfieldpark", "Mansfield Park"),
    ("emma", "Emma"),
    ("northangerabbey", "Northanger Abbey"),
    ("persuasion", "Persuasion"),
]
EVAL_BOOK = "persuasion"
EVAL_BYTES = 45_000

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 4096
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

MAX_POSITIONS = 4096

# Everything but the depth and width, which text_config() fills in.
TEXT_CONFIG = {
    "model_type": "minimax_m3",
    "vocab_size": VOCAB_SIZE,
    "num_key_value_heads": 1,
    "head_dim": 64,
    "partial_rotary_factor": 0.5,
    "rope_theta": 10000.0,
    "max_position_embeddings": MAX_POSITIONS,
    "dense_intermediate_size": 512,
    "intermediate_size": 128,
    "shared_intermediate_size": 128,
    "num_local_experts": 16,
    "num_experts_per_tok": 2,
    "routed_scaling_factor": 2.0,
    "rms_norm_eps": 1e-6,
    "use_qk_norm": True,
    "use_gemma_norm": True,
    "swiglu_alpha": 1.702,
    "swiglu_limit": 7.0,
    "tie_word_embeddings": False,
    "scoring_func": "sigmoid",
    "use_routing_bias": True,
    "torch_dtype": "bfloat16",
}


def text_config(layers: int, hidden: int) -> dict:
    """TEXT_CONFIG at the given depth and width: layer 0 dense, the rest MoE,
    one query head of 64 per 64 of hidden (so every linear input dim is a
    multiple of 64, the quantization group size)."""
    if layers < 2 or hidden % 64:
        raise SystemExit("need --layers >= 2 and --hidden a multiple of 64")
    tc = dict(TEXT_CONFIG)
    tc["hidden_size"] = hidden
    tc["num_hidden_layers"] = layers
    tc["num_attention_heads"] = hidden // tc["head_dim"]
    tc["moe_layer_freq"] = [0] + [1] * (layers - 1)
    return tc


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


# ---------------------------------------------------------------- data


def fetch_deb(workdir: Path) -> Path:
    """Download the pinned .deb with apt-get (falls back to the current one)."""
    for spec in (f"{DEB_NAME}={DEB_VERSION}", DEB_NAME):
        r = subprocess.run(
            ["apt-get", "download", spec],
            cwd=workdir,
            capture_output=True,
            text=True,
            check=False,
        )
        debs = sorted(workdir.glob(f"{DEB_NAME}_*.deb"))
        if r.returncode == 0 and debs:
            return debs[0]
    raise SystemExit(
        f"could not download {DEB_NAME} with apt-get (run 'apt-get update'?):\n"
        f"{r.stderr.strip()}"
    )


def read_deb_members(deb: Path, wanted_prefix: str) -> dict[str, bytes]:
    """Files under wanted_prefix from a .deb (an ar archive holding data.tar.*)."""
    data = deb.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise SystemExit(f"{deb} is not a .deb")
    pos, out = 8, {}
    while pos < len(data):
        header = data[pos : pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = data[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size & 1)
        if not name.startswith("data.tar"):
            continue
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
            for m in tar.getmembers():
                path = m.name.lstrip("./")
                if m.isfile() and path.startswith(wanted_prefix):
                    out[path[len(wanted_prefix) :]] = tar.extractfile(m).read()
    return out


def load_books(deb: Path) -> dict[str, list[str]]:
    files = read_deb_members(deb, DATA_DIR)
    with tempfile.TemporaryDirectory() as tmp:
        for name, blob in files.items():
            (Path(tmp) / name).write_bytes(blob)
        objects = read_lazyload(Path(tmp) / "Rdata.rdx")
    return {key: [ln or "" for ln in objects[key]] for key, _ in BOOKS}


_HEADING = re.compile(r"^(chapter|volume|book|vol\.)\b|^[^a-z]*$", re.IGNORECASE)


def paragraphs(lines: list[str]) -> list[str]:
    """Lines to cleaned paragraphs, headings and the title page dropped."""
    paras, cur = [], []
    for ln in lines + [""]:
        if ln.strip():
            cur.append(ln.strip())
            continue
        if cur:
            p = " ".join(cur)
            cur = []
            p = p.replace("_", "")
            p = re.sub(r"\s+", " ", p).strip()
            if len(p) < 40 and (_HEADING.search(p) or p.upper() == p):
                continue
            if _HEADING.search(p) and len(p) < 80:
                continue
            paras.append(p)
    # The first few paragraphs are title-page matter ("by Jane Austen", dates).
    while paras and (len(paras[0]) < 60 or "Austen" in paras[0]):
        paras.pop(0)
    return paras


def split_corpus(books: dict[str, list[str]]):
    """Return (train paragraphs per book, eval text)."""
    train, eval_paras = {}, []
    for key, _ in BOOKS:
        paras = paragraphs(books[key])
        if key == EVAL_BOOK:
            n, i = 0, len(paras)
            while i > 0 and n < EVAL_BYTES:
                i -= 1
                n += len(paras[i]) + 2
            eval_paras, paras = paras[i:], paras[:i]
        train[key] = paras
    return train, "\n\n".join(eval_paras) + "\n"


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


# ---------------------------------------------------------------- model


def model_config(tc: dict) -> dict:
    return {
        "architectures": ["MiniMaxM3VLForConditionalGeneration"],
        "model_type": "minimax_m3_vl",
        "text_config": dict(tc),
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "eos_token_id": None,  # filled in once the tokenizer exists
    }


def make_model(config: dict):
    from mlx_lm.models.minimax_m3_vl import Model, ModelArgs

    return Model(ModelArgs.from_dict(config))


def to_hf_weights(model) -> dict:
    """The trained MLX parameters under the real checkpoint's names and dtypes."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    names = {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}
    out = {}
    for name, w in tree_flatten(model.parameters()):
        m = re.match(r"(.*\.block_sparse_moe)\.switch_mlp\.(\w+)\.weight$", name)
        if m:
            for e in range(w.shape[0]):
                expert = f"{m.group(1)}.experts.{e}.{names[m.group(2)]}.weight"
                out[expert] = w[e].astype(mx.bfloat16)
            continue
        keep_f32 = name.endswith(
            ("block_sparse_moe.gate.weight", "e_score_correction_bias")
        )
        out[name] = w.astype(mx.float32 if keep_f32 else mx.bfloat16)
    return out


def train(model, stream: np.ndarray, args) -> list[tuple[int, float]]:
    import mlx.core as mx
    import mlx.optimizers as optim
    from mlx import nn
    from mlx.utils import tree_flatten

    mx.random.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    L, B = args.seq_len, args.batch
    n_params = sum(v.size for _, v in tree_flatten(model.parameters()))
    print(f"parameters: {n_params:,}", flush=True)

    moes = [l.block_sparse_moe for l in model.layers if l.is_moe]
    for moe in moes:  # the balancing bias is set by hand below, not by the optimizer
        moe.freeze(keys=["e_score_correction_bias"], recurse=False)
    opt = optim.AdamW(learning_rate=args.lr, weight_decay=0.05, betas=(0.9, 0.95))

    def loss_fn(model, x, y):
        logits = model(x)
        return nn.losses.cross_entropy(logits, y, reduction="mean")

    loss_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, opt.state]

    def step(x, y):
        loss, grads = loss_and_grad(model, x, y)
        grads, _ = optim.clip_grad_norm(grads, 1.0)
        opt.update(model, grads)
        return loss

    if args.compile:
        step = mx.compile(step, inputs=state, outputs=state)

    def routing_counts(x):
        # Expert load per MoE layer for the balancing bias update (no grad).
        h = model.language_model.model.embed_tokens(x)
        from mlx_lm.models.base import create_attention_mask

        mask = create_attention_mask(h, None)
        counts = []
        for layer in model.layers:
            r = h + layer.self_attn(layer.input_layernorm(h), mask, None)
            if layer.is_moe:
                moe = layer.block_sparse_moe
                z = layer.post_attention_layernorm(r).reshape(-1, h.shape[-1])
                s = mx.sigmoid(moe.gate(z)) + moe.e_score_correction_bias
                k = moe.num_experts_per_tok
                inds = mx.argpartition(-s, kth=k - 1, axis=-1)[..., :k]
                counts.append(
                    (inds[..., None] == mx.arange(s.shape[-1])).sum(axis=(0, 1))
                )
                r = r + moe(layer.post_attention_layernorm(r))
            else:
                r = r + layer.mlp(layer.post_attention_layernorm(r))
            h = r
        return counts

    def batch():
        starts = rng.integers(0, len(stream) - L - 1, size=B)
        chunk = np.stack([stream[s : s + L + 1] for s in starts])
        return mx.array(chunk[:, :-1]), mx.array(chunk[:, 1:])

    budget = args.minutes * 60.0
    t0 = time.time()
    log, avg, it = [], None, 0
    warmup = 30
    while True:
        elapsed = time.time() - t0
        progress = elapsed / budget if args.steps is None else it / args.steps
        if progress >= 1.0:
            break
        lr = args.lr * min(1.0, (it + 1) / warmup)
        lr *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        opt.learning_rate = lr
        x, y = batch()
        loss = step(x, y)
        mx.eval(loss, model.parameters(), opt.state)
        if it % 8 == 0:
            # Auxiliary-loss-free balancing: raise the bias of under-used experts.
            counts = routing_counts(x)
            for moe, c in zip(moes, counts):
                c = c.astype(mx.float32)
                moe.e_score_correction_bias = (
                    moe.e_score_correction_bias + 2e-3 * mx.sign(c.mean() - c)
                )
            mx.eval([m.e_score_correction_bias for m in moes])
        lv = loss.item()
        avg = lv if avg is None else 0.98 * avg + 0.02 * lv
        if it % 25 == 0:
            print(
                f"step {it:5d}  loss {lv:.3f}  avg {avg:.3f}  lr {lr:.2e}  "
                f"{time.time() - t0:7.1f}s  tok/s {(it + 1) * B * L / (time.time() - t0):.0f}",
                flush=True,
            )
            log.append((it, avg))
        it += 1
    log.append((it, avg))
    print(
        f"trained {it} steps, {it * B * L:,} tokens in {time.time() - t0:.0f}s; "
        f"final smoothed loss {avg:.3f}",
        flush=True,
    )
    if moes:
        counts = routing_counts(batch()[0])
        for i, c in enumerate(counts):
            print(f"expert load, MoE layer {i}: {np.array(c).tolist()}")
    return log


# ---------------------------------------------------------------- output


def write_outputs(
    model, tok, out: Path, tc: dict, log, args, train_tokens: int, wall: float
):
    import mlx.core as mx
    from mlx.utils import tree_flatten

    cfg = model_config(tc)
    eos = tok.token_to_id("<|im_end|>")
    eot = tok.token_to_id("<|endoftext|>")
    cfg["eos_token_id"] = eos
    cfg["text_config"]["eos_token_id"] = eos
    cfg["text_config"]["pad_token_id"] = eot
    cfg["bos_token_id"] = eot
    cfg["text_config"]["bos_token_id"] = eot
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (out / "generation_config.json").write_text(
        json.dumps(
            {
                "eos_token_id": [eos, eot],
                "pad_token_id": eot,
                "do_sample": True,
                "temperature": 1.0,
                "top_p": 0.95,
            },
            indent=2,
        )
        + "\n"
    )
    weights = to_hf_weights(model)
    mx.save_safetensors(
        str(out / "model.safetensors"), weights, metadata={"format": "pt"}
    )
    n_params = sum(v.size for _, v in tree_flatten(model.parameters()))
    (out / "training_log.json").write_text(
        json.dumps(
            {
                "parameters": n_params,
                "train_tokens_seen": train_tokens,
                "wall_seconds": round(wall),
                "seq_len": args.seq_len,
                "batch": args.batch,
                "lr": args.lr,
                "seed": args.seed,
                "loss": [[s, round(l, 4)] for s, l in log],
            }
        )
        + "\n"
    )


README = """\
# Demo model: a tiny MiniMax-M3 trained on Jane Austen

A small model in the MiniMax-M3 architecture (`model_type` `minimax_m3_vl`,
text only) that ships with Config-I Studio so the app and its tests have a
real source checkpoint to open, convert and chat with offline. It writes
Austen-flavoured English sentences; it is not a useful assistant.

Rebuild it with `python tools/train_demo_model.py --out studio/resources/demo_model
--tokenizer-from studio/resources/demo_model --layers {layers} --hidden {hidden} --minutes {train_minutes}`
(needs `apt-get` access to the Debian archive and about {minutes} minutes of CPU).

## Data

- Package: Debian `r-cran-janeaustenr`, version `1.0.0-1` (Debian main;
  upstream CRAN "janeaustenr" 1.0.0 by Julia Silge).
- Files: `usr/lib/R/site-library/janeaustenr/data/Rdata.rdx` and `Rdata.rdb`
  (R lazy-load data base; read with `tools/rlazyload.py`, no R needed).
- Text: Jane Austen's six novels as transcribed by Project Gutenberg:
  Sense and Sensibility, Pride and Prejudice, Mansfield Park, Emma,
  Northanger Abbey, Persuasion.
- Licence: the novels are in the public domain (published 1811-1817; the
  author died in 1817). The R package's code and Debian packaging are MIT.
- Held out: the last ~45 KB of "Persuasion" (`studio/resources/eval_sample.txt`);
  it is not in the training data.

## Model

| | |
|---|---|
| layers | {layers} (layer 0 dense MLP {dense}, layers 1-{last} MoE) |
| hidden | {hidden}; {heads} query heads and {kv} KV head(s) of {head_dim}; qk-norm; partial RoPE |
| MoE | {experts} experts of {inter}, top-{topk}, sigmoid router with correction bias, one shared expert of {shared} |
| vocab | {vocab} (byte-level BPE trained on the same text) |
| parameters | {params:,} |
| file | `model.safetensors`, {size_mb:.1f} MB: bf16, router `gate` and `e_score_correction_bias` F32 |

Weights use the Hugging Face layout of the real MiniMax-M3 checkpoint
(`language_model.model.layers.N.block_sparse_moe.experts.E.{{w1,w3,w2}}`,
`shared_experts.{{gate,up,down}}_proj`, `mlp.{{gate,up,down}}_proj` on the dense
layer, `language_model.lm_head`), so mlx-lm's `sanitize` and the studio's
converter treat it as a source checkpoint.

## Training

MLX {mlx_version} on CPU (OpenBLAS preloaded, see the script), float32, AdamW (lr {lr}, cosine, weight decay 0.05),
batch {batch} x {seq_len} tokens, {steps} steps ({tokens:,} tokens) in {wall_min:.0f}
minutes (the schedule follows wall time, so a rebuild differs a little;
`--steps N` fixes the step count instead); final training loss {loss:.2f}; held-out perplexity {ppl:.1f}
(per token, on `eval_sample.txt`). About a third of the samples are chat
turns (ChatML-style, `<|im_start|>role ... <|im_end|>`) whose answer is a
paragraph of the novels, so the chat template leads to prose. Experts are
balanced with the auxiliary-loss-free bias update.

On the CPU backend, cast to float32 before generating (MLX's `gather_mm`
runs only in float32 there):

```python
import mlx.core as mx
from mlx_lm import load, generate
model, tok = load("studio/resources/demo_model")
model.set_dtype(mx.float32)
prompt = tok.apply_chat_template([{{"role": "user", "content": "Tell me a story."}}],
                                 add_generation_prompt=True)
print(generate(model, tok, prompt, max_tokens=60))
```

## Samples (greedy, float32)

Greedy decoding falls into loops, as small models do:

{samples}

## Samples (temperature 0.7, top_p 0.95, float32)

{sampled}
"""


def verify(out: Path, eval_text: str, prompts: list[str]):
    """Reload with mlx_lm.load, cast to float32, generate, and score held-out text."""
    import mlx.core as mx
    from mlx import nn
    from mlx_lm import generate, load
    from mlx_lm.sample_utils import make_sampler

    model, tok = load(str(out))
    model.set_dtype(mx.float32)
    samples = []
    for p in prompts:
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True
        )
        text = generate(model, tok, prompt, max_tokens=80, sampler=make_sampler(0.0))
        samples.append((p, text))
        print(f"\n[user] {p}\n[assistant] {text}", flush=True)
    mx.random.seed(1)
    sampled = []
    for p in [
        "Tell me about the young lady.",
        "Write something about love and marriage.",
    ]:
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True
        )
        sampler = make_sampler(0.7, top_p=0.95)
        text = generate(model, tok, prompt, max_tokens=80, sampler=sampler)
        sampled.append((p, text))
        print(f"\n[user] {p}\n[assistant, sampled] {text}", flush=True)
    ids = tok.encode(eval_text)
    total, count = 0.0, 0
    for s in range(0, len(ids) - 1, 256):
        chunk = ids[s : s + 257]
        if len(chunk) < 2:
            break
        x = mx.array(chunk[:-1])[None]
        y = mx.array(chunk[1:])[None]
        total += nn.losses.cross_entropy(model(x), y, reduction="sum").item()
        count += len(chunk) - 1
    ppl = math.exp(total / count)
    print(f"held-out perplexity: {ppl:.2f} over {count} tokens", flush=True)
    return samples, sampled, ppl


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("studio/resources/demo_model"))
    ap.add_argument(
        "--eval-out",
        type=Path,
        default=None,
        help="held-out text (default: <out>/../eval_sample.txt)",
    )
    ap.add_argument(
        "--deb", type=Path, help=f"a local {DEB_NAME} .deb instead of apt-get download"
    )
    ap.add_argument(
        "--minutes", type=float, default=40.0, help="training wall-time budget"
    )
    ap.add_argument("--layers", type=int, default=8, help="layer 0 dense, rest MoE")
    ap.add_argument("--hidden", type=int, default=128, help="a multiple of 64")
    ap.add_argument(
        "--tokenizer-from",
        type=Path,
        default=None,
        help="reuse tokenizer.json, tokenizer_config.json and words.txt from DIR",
    )
    ap.add_argument(
        "--steps", type=int, default=None, help="fixed step count instead of --minutes"
    )
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    args = ap.parse_args(argv)

    import mlx.core as mx

    mx.set_default_device(mx.cpu)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    eval_out = args.eval_out or out.parent / "eval_sample.txt"

    with tempfile.TemporaryDirectory() as tmp:
        deb = args.deb or fetch_deb(Path(tmp))
        print(f"data: {deb.name}", flush=True)
        books = load_books(deb)
    train_paras, eval_text = split_corpus(books)
    eval_out.write_text(eval_text)
    n_train = sum(len(p) + 2 for ps in train_paras.values() for p in ps)
    print(
        f"train text: {n_train:,} chars; held out: {len(eval_text):,} chars -> {eval_out}"
    )

    if args.tokenizer_from:
        tok = copy_tokenizer(args.tokenizer_from, out)
        print(f"tokenizer and word list: copied from {args.tokenizer_from}")
    else:
        print(f"word list: {write_word_list(train_paras, out / 'words.txt')} words")
        tok = train_tokenizer(train_paras, out)
    stream = build_stream(train_paras, tok, args.seed)

    tc = text_config(args.layers, args.hidden)
    model = make_model(model_config(tc))
    t0 = time.time()
    log = train(model, stream, args)
    wall = time.time() - t0
    steps = log[-1][0]
    tokens = steps * args.batch * args.seq_len
    write_outputs(model, tok, out, tc, log, args, tokens, wall)

    prompts = [
        "Tell me a story.",
        "What did she think of him?",
        "Describe the evening.",
    ]
    samples, sampled, ppl = verify(out, eval_text, prompts)
    from mlx.utils import tree_flatten

    size_mb = (out / "model.safetensors").stat().st_size / 1e6

    def quote(pairs):
        return "\n\n".join(
            f"> **user:** {p}\n>\n> **assistant:** {t.strip()}" for p, t in pairs
        )

    sample_md = quote(samples)
    sampled_md = quote(sampled)
    (out / "README.md").write_text(
        README.format(
            minutes=round(args.minutes) + 5,
            train_minutes=round(args.minutes),
            layers=tc["num_hidden_layers"],
            last=tc["num_hidden_layers"] - 1,
            dense=tc["dense_intermediate_size"],
            hidden=tc["hidden_size"],
            heads=tc["num_attention_heads"],
            kv=tc["num_key_value_heads"],
            head_dim=tc["head_dim"],
            experts=tc["num_local_experts"],
            inter=tc["intermediate_size"],
            topk=tc["num_experts_per_tok"],
            shared=tc["shared_intermediate_size"],
            vocab=tc["vocab_size"],
            params=sum(v.size for _, v in tree_flatten(model.parameters())),
            size_mb=size_mb,
            mlx_version=mx.__version__,
            lr=args.lr,
            batch=args.batch,
            seq_len=args.seq_len,
            steps=steps,
            tokens=steps * args.batch * args.seq_len,
            wall_min=wall / 60,
            loss=log[-1][1],
            ppl=ppl,
            samples=sample_md,
            sampled=sampled_md,
        )
    )
    print(f"wrote {out} ({size_mb:.1f} MB weights)")


if __name__ == "__main__":
    main()
