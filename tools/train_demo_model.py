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
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_model.architecture import make_model, model_config, text_config  # noqa: E402
from demo_model.corpus import DEB_NAME, fetch_deb, load_books, split_corpus  # noqa: E402
from demo_model.outputs import verify, write_outputs  # noqa: E402
from demo_model.readme import write_readme  # noqa: E402
from demo_model.stream import build_stream  # noqa: E402
from demo_model.tokenizer import copy_tokenizer, train_tokenizer, write_word_list  # noqa: E402
from demo_model.training import train  # noqa: E402


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
    size_mb = write_readme(out, model, tc, args, log, wall, ppl, samples, sampled)
    print(f"wrote {out} ({size_mb:.1f} MB weights)")


if __name__ == "__main__":
    main()
