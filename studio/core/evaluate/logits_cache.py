"""The reference model's next-token distributions, kept so the output can be compared alone.

When the reference and the output do not fit in memory together, the
reference runs first, once, over the evaluation tokens; what the comparison
needs from it is written to disk here, the reference is freed, and the output
is compared against the file. The same file serves every later output
compared against the same reference, text and window settings.

What is stored, per scored position (a token that the model predicts):

- ``nll``: the reference's negative log-likelihood of the true next token
  (float32, exact), for the reference perplexity;
- ``argmax``: the reference's top-1 token (int32, exact), for top-1 agreement;
- ``nonfinite``: True where the reference's logits held NaN or inf (such
  positions are left out of every figure);
- the log-probabilities KL needs, in one of two layouts:

  * ``full``: every log-probability, float32 ``[positions, vocab]`` in a
    memory-mapped ``.npy``. Used whenever it fits the byte budget
    (``FULL_BUDGET_BYTES``: 512 MiB, e.g. 4,096 positions of a 32k vocabulary).
    KL is then exact: the same float32 numbers the in-memory path uses, so the
    two paths agree to the last bit. Not float16: a float16 log-prob near -16
    is off by ~0.008, i.e. ~0.8% in probability, which would swamp the KL of a
    good quant (~0.01).
  * ``topk``: for huge vocabularies (MiniMax-M3's 200,064 would need 800 KB a
    position), the ``k`` (default 256) largest log-probabilities and their
    token ids, float32 + int32, 2 KB a position. KL is then computed with the
    tail (all tokens outside the reference's top-k) merged into one bucket:

        KL_k = sum_{i in top-k} p_i (log p_i - log q_i) + R log(R / Q)

    with R = 1 - sum_{top-k} p_i and Q = 1 - sum_{top-k} q_i. By the log-sum
    inequality KL_k <= KL, and the gap is exactly R * KL(p_tail/R || q_tail/Q):
    the divergence hidden inside the tail, weighted by the tail's mass R. The
    mean R is reported with the result (``kld_tail_mass``), so the user sees
    how much of the distribution was coarse-grained; for LLMs with k=256 it is
    typically well under 1%.

Layout on disk: ``<cache_dir>/ref-<key>/`` with ``meta.json`` and one ``.npy``
per array. The folder is written under a temporary name and renamed into place
only when complete, so a cancelled or killed run never leaves a cache that
looks finished. ``meta.json`` records each array's shape and checksum; a
folder whose files do not match it (truncated, overwritten, a file missing, an
older format) is not a cache: it is discarded and written again, and nothing
else in the cache folder is touched. ``<key>`` hashes the reference's identity (path plus names,
sizes and mtimes of its config, weight and tokenizer files, or a hash of the
parameters of a model given in memory), the token ids and the window settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import mlx.core as mx
import numpy as np

from studio.core.checksum import file_digest
from studio.core.code_version import code_version

FORMAT_VERSION = 3  # 2: adds `nonfinite`; 3: shapes and checksums in meta.json
FULL_BUDGET_BYTES = 512 * 1024 * 1024
DEFAULT_TOP_K = 256

# Files whose change means a different reference model.
_IDENTITY_PATTERNS = ("config.json", "*.safetensors", "*.safetensors.index.json", "tokenizer*.json",
                      "tokenizer.model", "*.tiktoken", "generation_config.json")


def default_cache_dir() -> Path:
    """The per-user cache folder of the studio (not a temp folder: the point is reuse)."""
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "configi-studio" / "eval-reference"


def folder_identity(path: str | os.PathLike) -> str:
    """A hash of a model folder's path and the names, sizes and mtimes of the files that define it."""
    root = Path(path).resolve()
    h = hashlib.sha256(str(root).encode())
    files = sorted({p for pattern in _IDENTITY_PATTERNS for p in root.glob(pattern)})
    for p in files:
        st = p.stat()
        h.update(f"\0{p.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()


def parameters_identity(model) -> str:
    """A hash of every parameter of a model held in memory (for tests and in-process use; reads all weights)."""
    from mlx.utils import tree_flatten

    h = hashlib.sha256()
    for name, value in sorted(tree_flatten(model.parameters()), key=lambda kv: kv[0]):
        h.update(f"\0{name}\0{value.dtype}\0{tuple(value.shape)}".encode())
        h.update(np.array(value.reshape(-1).view(mx.uint8)).tobytes())
    return h.hexdigest()


def tokens_hash(tokens: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(tokens, dtype=np.int64).tobytes()).hexdigest()


def choose_storage(positions: int, vocab: int, top_k: int = DEFAULT_TOP_K,
                   full_budget_bytes: int = FULL_BUDGET_BYTES) -> tuple[str, int]:
    """("full", vocab) when every log-prob fits the budget, else ("topk", k)."""
    if positions * vocab * 4 <= full_budget_bytes or top_k >= vocab:
        return "full", vocab
    return "topk", int(top_k)


# The code the stored distributions are a function of: how the reference is loaded and prepared
# (runtime: generation, compute_path), run and scored (evaluate.run, this module); mlx and mlx-lm
# versions come with it. See studio.core.code_version for the rule every cache key follows.
CODE = ("studio.core.evaluate.run", "studio.core.evaluate.logits_cache", "studio.core.runtime")


def cache_key(reference_identity: str, tokens: np.ndarray, windows: Sequence[tuple[int, int]]) -> str:
    """The cache folder's key. The layout (full or top-k) is not part of it: it follows from the
    vocabulary and the number of positions, which the other parts fix, and is recorded in meta.json."""
    blob = json.dumps({
        "format": FORMAT_VERSION,
        "code": code_version(CODE),
        "reference": reference_identity,
        "tokens": tokens_hash(tokens),
        "windows": [list(w) for w in windows],
    }, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


# --- the comparison math, shared by the in-memory path and the cached path -------------------


def log_softmax(logits: mx.array) -> mx.array:
    """float32 log-probabilities over the last axis."""
    x = logits.astype(mx.float32)
    return x - mx.logsumexp(x, axis=-1, keepdims=True)


def nll_of(logprobs: mx.array, targets: mx.array) -> mx.array:
    return -mx.take_along_axis(logprobs, targets[:, None], axis=-1)[:, 0]


def kl_full(ref_logprobs: mx.array, out_logprobs: mx.array) -> mx.array:
    """Exact KL(ref || out) per position, from full float32 log-probs, clipped at 0 (rounding)."""
    kl = mx.sum(mx.exp(ref_logprobs) * (ref_logprobs - out_logprobs), axis=-1)
    return mx.maximum(kl, 0.0)


def kl_topk(ref_idx: mx.array, ref_topk: mx.array, out_logprobs: mx.array) -> tuple[mx.array, mx.array]:
    """KL(ref || out) with the reference's tail merged into one bucket (a lower bound; see module doc).

    Returns (kl per position, tail mass R per position).
    """
    q_top = mx.take_along_axis(out_logprobs, ref_idx, axis=-1)
    p_top = mx.exp(ref_topk)
    head = mx.sum(p_top * (ref_topk - q_top), axis=-1)
    r = mx.maximum(1.0 - mx.sum(p_top, axis=-1), 0.0)
    q = mx.maximum(1.0 - mx.sum(mx.exp(q_top), axis=-1), 0.0)
    tiny = 1e-30
    tail = mx.where(r > 0, r * (mx.log(mx.maximum(r, tiny)) - mx.log(mx.maximum(q, tiny))), 0.0)
    return mx.maximum(head + tail, 0.0), r


def top_k_of(logprobs: mx.array, k: int) -> tuple[mx.array, mx.array]:
    """The k largest log-probs per position and their token ids (unordered)."""
    idx = mx.argpartition(-logprobs, kth=k - 1, axis=-1)[:, :k].astype(mx.int32)
    return idx, mx.take_along_axis(logprobs, idx, axis=-1)


# --- the file ----------------------------------------------------------------------------------


def array_specs(storage: str, positions: int, vocab: int, k: int) -> dict[str, tuple[np.dtype, tuple]]:
    """The arrays of a cache of this layout: name -> (dtype, shape)."""
    specs = {"nll": (np.float32, (positions,)), "argmax": (np.int32, (positions,)),
             "nonfinite": (np.bool_, (positions,))}
    if storage == "full":
        specs["logprobs"] = (np.float32, (positions, vocab))
    elif storage == "topk":
        specs.update(topk_idx=(np.int32, (positions, k)), topk_logprobs=(np.float32, (positions, k)))
    else:
        raise ValueError(f"unknown cache storage {storage!r}")
    return {name: (np.dtype(dtype), tuple(int(n) for n in shape)) for name, (dtype, shape) in specs.items()}


@dataclass
class ReferenceCache:
    """A finished cache folder, memory-mapped for reading."""

    folder: Path
    meta: dict
    nll: np.ndarray
    argmax: np.ndarray
    nonfinite: np.ndarray
    logprobs: np.ndarray | None
    topk_idx: np.ndarray | None
    topk_logprobs: np.ndarray | None

    @property
    def storage(self) -> str:
        return self.meta["storage"]

    @classmethod
    def open(cls, folder: Path) -> "ReferenceCache | None":
        """The cache in ``folder``, or None if there is none or it is not whole (see `broken`)."""
        meta_path = folder / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
            if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION or not meta.get("complete"):
                return None
            arrays = {}
            for name, (dtype, shape) in array_specs(meta["storage"], meta["positions"], meta["vocab"],
                                                    meta["k"]).items():
                path = folder / f"{name}.npy"
                if file_digest(path) != meta["digests"][name]:
                    return None
                arrays[name] = np.load(path, mmap_mode="r")
                if arrays[name].dtype != dtype or arrays[name].shape != shape:
                    return None
            return cls(folder, meta, arrays["nll"], arrays["argmax"], arrays["nonfinite"], arrays.get("logprobs"),
                       arrays.get("topk_idx"), arrays.get("topk_logprobs"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    @staticmethod
    def broken(folder: Path) -> bool:
        """A folder in a cache's place that is not a whole cache: it can only be discarded."""
        return folder.exists() and ReferenceCache.open(folder) is None

    def window(self, offset: int, n: int):
        """(nll, argmax, nonfinite, and the stored log-probs) of positions [offset, offset+n) as mx arrays."""
        s = slice(offset, offset + n)
        nll = mx.array(np.asarray(self.nll[s]))
        argmax = mx.array(np.asarray(self.argmax[s]))
        nonfinite = mx.array(np.asarray(self.nonfinite[s]))
        if self.storage == "full":
            return nll, argmax, nonfinite, (mx.array(np.asarray(self.logprobs[s])),)
        return nll, argmax, nonfinite, (mx.array(np.asarray(self.topk_idx[s])),
                                        mx.array(np.asarray(self.topk_logprobs[s])))


class ReferenceCacheWriter:
    """Writes a cache folder window by window under a temporary name; ``commit`` renames it into place."""

    def __init__(self, folder: Path, meta: dict, positions: int, vocab: int, storage: str, k: int):
        self.folder = folder
        self.meta = dict(meta, format=FORMAT_VERSION, storage=storage, k=k, vocab=vocab, positions=positions)
        folder.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir()
        self.storage = storage

        def new(name, dtype, shape):
            return np.lib.format.open_memmap(self.tmp / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)

        for name, (dtype, shape) in array_specs(storage, positions, vocab, k).items():
            setattr(self, name, new(name, dtype, shape))

    def write(self, offset: int, nll: mx.array, argmax: mx.array, logprobs: mx.array, nonfinite: mx.array) -> None:
        n = nll.shape[0]
        s = slice(offset, offset + n)
        self.nll[s] = np.array(nll)
        self.argmax[s] = np.array(argmax)
        self.nonfinite[s] = np.array(nonfinite)
        if self.storage == "full":
            self.logprobs[s] = np.array(logprobs)
        else:
            idx, top = top_k_of(logprobs, self.meta["k"])
            self.topk_idx[s] = np.array(idx)
            self.topk_logprobs[s] = np.array(top)

    def _close(self) -> None:
        for name in ("nll", "argmax", "nonfinite", "logprobs", "topk_idx", "topk_logprobs"):
            arr = getattr(self, name, None)
            if arr is not None:
                arr.flush()
                setattr(self, name, None)

    def commit(self) -> ReferenceCache:
        self._close()
        digests = {name: file_digest(self.tmp / f"{name}.npy")
                   for name in array_specs(self.storage, self.meta["positions"], self.meta["vocab"], self.meta["k"])}
        (self.tmp / "meta.json").write_text(json.dumps(dict(self.meta, digests=digests, complete=True), indent=1))
        if ReferenceCache.broken(self.folder):
            shutil.rmtree(self.folder, ignore_errors=True)  # only this key's folder: it can never be read
        try:
            os.replace(self.tmp, self.folder)
        except OSError:
            # Another run finished the same cache first; theirs is as good as ours.
            shutil.rmtree(self.tmp, ignore_errors=True)
        opened = ReferenceCache.open(self.folder)
        if opened is None:
            raise OSError(f"the reference cache in {self.folder} could not be read back")
        return opened

    def abort(self) -> None:
        self._close()
        shutil.rmtree(self.tmp, ignore_errors=True)
