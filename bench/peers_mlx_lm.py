"""mlx-lm's own quantizers as peers: plain convert, GPTQ, AWQ and DWQ at the same bits and
group size, each scored with the studio's evaluation (mean KL, perplexity, top-1 agreement
against the float model on held-out text), with output bytes and peak RSS.

    python bench/peers_mlx_lm.py MODEL --bits 4 --group-size 64 [--text FILE]
        [--methods convert gptq awq dwq] [--out-dir DIR] [--json]

or from Python (other bench scripts compare against this table):

    from bench.peers_mlx_lm import run_peers
    rows = run_peers("path/to/model", 4, 64, text=None, out_dir="/tmp/peers")

Each method runs in its own subprocess (this file with --worker), so ``peak_rss_mb`` is
that process's ru_maxrss, read right after quantizing and saving (before the evaluation),
loading included. The evaluation (studio.core.evaluate.run.evaluate, as
``configi-studio eval`` does, mode "together") runs in the same subprocess afterwards.

What is called (mlx-lm's public functions; their CLIs download calibration data
from the network, which this bench does not):
  convert  mlx_lm.convert.convert(quantize=True, q_bits, q_group_size): the baseline.
  gptq     mlx_lm.quant.gptq.gptq_quantize; every Linear / SwitchLinear via GPTQ,
           the rest (embeddings) at the same bits and group size (mlx-lm's default
           fallback is 6 bits; equal bits keep the byte counts comparable). mlx-lm's
           GPTQ supports 2, 4 and 8 bits only. On MoE it accumulates ONE Hessian over
           all tokens for the stacked expert weights, not one per expert.
  awq      mlx_lm.quant.awq.awq_quantize with AWQ_MODEL_CONFIGS[model_type]; embeddings
           and lm_head at the same bits / group size. mlx-lm has no AWQ config for
           mixtral (nor most MoE types): reported as unsupported.
  dwq      mlx_lm.quant.dwq.dwq_quantize: the plainly quantized model distilled
           (scales and biases trained, KL to the float model) on the calibration
           sequences, Adam lr --dwq-lr (mlx-lm's CLI default 1e-6 is for large models),
           batch 4, --dwq-epochs passes over them (mlx-lm makes one pass over its
           default 2048 samples; one pass over 32 sequences is 7 steps and barely moves).
           A quarter of the sequences (at least 4) are held back for its validation.
The quantizers compute in float32 and the result is cast back to the source's dtype:
MLX's gather_mm is float32-only on a CPU (MoE), and mlx-lm's GPTQ run on a bf16 dense
model here is broken (6M Austen llama, 4-bit g64, 8x256 calibration tokens: KL 0.385
on 512 held-out tokens in bf16 vs 0.00094 in float32; mlx_lm.gptq's CLI loads bf16).

Calibration text for every method: the studio's bundled calibration corpus
(studio.core.calibration.corpus.load_corpus: --calib-sequences x --calib-length tokens),
which shares no text with the evaluation sample.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHODS = ("convert", "gptq", "awq", "dwq")


def run_peers(model, bits: int, group_size: int, text: str | None = None, *,
              out_dir: str | os.PathLike | None = None, methods=METHODS,
              calib_sequences: int = 32, calib_length: int = 256,
              max_tokens: int = 4096, context: int = 512, dwq_lr: float = 1e-5,
              dwq_epochs: int = 1, timeout: float | None = None) -> list[dict]:
    """One row per method: method, status, out, bytes, kld_mean, ppl, ppl_reference, top1,
    quantize_s, peak_rss_mb, note. ``text`` is the held-out text (default: the studio's
    bundled evaluation sample). Outputs go to out_dir/<method> (a temp folder if None)."""
    import tempfile

    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="peers-")
        out_dir = tmp.name
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text_file = None
    if text is not None:
        text_file = out_dir / "heldout.txt"
        text_file.write_text(text)
    rows = []
    for method in methods:
        out = out_dir / f"{method}-{bits}b-g{group_size}"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, str(model),
               "--bits", str(bits), "--group-size", str(group_size), "--out", str(out),
               "--calib-sequences", str(calib_sequences), "--calib-length", str(calib_length),
               "--max-tokens", str(max_tokens), "--context", str(context), "--dwq-lr", str(dwq_lr),
               "--dwq-epochs", str(dwq_epochs)]
        if text_file is not None:
            cmd += ["--text", str(text_file)]
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            rows.append({"method": method, "status": "error", "note": f"over {timeout:.0f} s"})
            continue
        row = None
        for line in proc.stdout.splitlines():
            if line.startswith("PEER_RESULT "):
                row = json.loads(line[len("PEER_RESULT "):])
        if row is None:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            row = {"method": method, "status": "error", "note": f"exit {proc.returncode}: {tail}"}
        rows.append(row)
    if tmp is not None:
        tmp.cleanup()
    return rows


# ---------------------------------------------------------------- worker (one per method)

def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def _calibration(model_path: Path, sequences: int, length: int):
    import mlx.core as mx

    from studio.core.calibration.corpus import load_corpus

    return mx.array(load_corpus(model_path, None, sequences, length).tokens)


def _load_float(model_path: Path):
    import mlx.core as mx
    from mlx_lm.utils import load

    model, tok, config = load(str(model_path), return_config=True)
    src_dtype = next(v.dtype for k, v in _flat(model.parameters()) if "norm" not in k)
    model.set_dtype(mx.float32)  # see the module doc: gather_mm on CPU, GPTQ in bf16
    return model, tok, config, src_dtype


def _flat(params):
    from mlx.utils import tree_flatten

    return tree_flatten(params)


def _save(out: Path, model_path: Path, model, tok, config: dict, dtype) -> None:
    from mlx_lm.utils import save

    model.set_dtype(dtype)
    save(str(out), str(model_path), model, tok, config)


def _quantize(method: str, model_path: Path, out: Path, bits: int, group_size: int,
              seqs: int, length: int, dwq_lr: float, dwq_epochs: int = 1) -> str:
    """Run one mlx-lm quantizer; returns a note. Raises NotImplementedError when unsupported."""
    import copy

    import mlx.core as mx

    mx.random.seed(0)
    if method == "convert":
        from mlx_lm.convert import convert

        convert(str(model_path), str(out), quantize=True, q_bits=bits, q_group_size=group_size)
        return "mlx_lm.convert"
    model, tok, config, dtype = _load_float(model_path)
    data = _calibration(model_path, seqs, length)
    if method == "gptq":
        from mlx_lm.quant.gptq import gptq_quantize

        if bits not in (2, 4, 8):
            raise NotImplementedError(f"mlx-lm's GPTQ supports 2, 4 or 8 bits, not {bits}")
        model, config["quantization"] = gptq_quantize(model, data, bits, group_size, bits, group_size)
        _save(out, model_path, model, tok, config, dtype)
        return f"gptq_quantize, {data.shape[0]}x{data.shape[1]} calibration tokens"
    if method == "awq":
        from mlx_lm.quant.awq import AWQ_MODEL_CONFIGS, awq_quantize, update_config

        awq_config = AWQ_MODEL_CONFIGS.get(config["model_type"])
        if awq_config is None:
            raise NotImplementedError(f"mlx-lm has no AWQ config for {config['model_type']}")
        awq_quantize(model, data, awq_config, group_size=group_size, bits=bits,
                     embed_group_size=group_size, embed_bits=bits)
        config = update_config(model, config)
        _save(out, model_path, model, tok, config, dtype)
        return f"awq_quantize, {data.shape[0]}x{data.shape[1]} calibration tokens"
    if method == "dwq":
        import mlx.optimizers as optim
        from mlx_lm.quant.dwq import dwq_quantize
        from mlx_lm.utils import quantize_model

        q_model = copy.deepcopy(model)
        _, config = quantize_model(q_model, config, group_size=group_size, bits=bits)
        seq = [(row.tolist(), 0) for row in data]
        n_valid = max(4, len(seq) // 4)
        train, valid = seq[:-n_valid] * dwq_epochs, seq[-n_valid:]
        if len(train) < 4:
            raise NotImplementedError(f"DWQ needs at least {4 + n_valid} calibration sequences here")
        model.eval()

        def target_fn(batch, idx, split):
            return mx.stop_gradient(model(batch))

        dwq_quantize(q_model, target_fn, optim.Adam(learning_rate=dwq_lr, bias_correction=True),
                     train, valid, batch_size=4, max_seq_length=length + 1, seed=0,
                     dtype=mx.float32)
        q_model.eval()
        _save(out, model_path, q_model, tok, config, dtype)
        return (f"dwq_quantize lr {dwq_lr:g}, {len(train) // dwq_epochs} train x {dwq_epochs} "
                f"/ {len(valid)} valid sequences of {length}")
    raise ValueError(f"unknown method {method!r}")


def _worker(args) -> None:
    import shutil

    from studio.core.evaluate.run import evaluate

    row = {"method": args.worker, "out": str(args.out), "bits": args.bits,
           "group_size": args.group_size}
    if args.out.exists():
        shutil.rmtree(args.out)
    t0 = time.time()
    try:
        row["note"] = _quantize(args.worker, args.model, args.out, args.bits, args.group_size,
                                args.calib_sequences, args.calib_length, args.dwq_lr,
                                args.dwq_epochs)
    except NotImplementedError as exc:
        row.update(status="unsupported", note=str(exc))
        print("PEER_RESULT " + json.dumps(row), flush=True)
        return
    except Exception as exc:  # a peer that breaks is a row of the table, not a crash of it
        row.update(status="error", note=f"{type(exc).__name__}: {exc}"[:300])
        print("PEER_RESULT " + json.dumps(row), flush=True)
        return
    row.update(status="ok", quantize_s=round(time.time() - t0, 1),
               peak_rss_mb=round(_peak_rss_mb(), 1), bytes=_folder_bytes(args.out))
    r = evaluate(args.out, args.model, text_path=args.text, max_tokens=args.max_tokens,
                 context=args.context, mode="together")
    row.update(kld_mean=r.kld_mean, ppl=r.ppl, ppl_reference=r.ppl_reference,
               top1=r.top1_agreement, eval_tokens=getattr(r, "tokens", None))
    print("PEER_RESULT " + json.dumps(row), flush=True)


def _table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["method"] == "convert" and r.get("status") == "ok"), None)
    lines = [f"{'method':8} {'status':11} {'bytes':>12} {'KL mean':>9} {'KL/conv':>8} {'ppl':>8} "
             f"{'top-1':>6} {'quant s':>8} {'peak RSS MB':>11}  note"]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"{r['method']:8} {r.get('status', '?'):11} {'':>12} {'':>9} {'':>8} {'':>8} "
                         f"{'':>6} {'':>8} {'':>11}  {r.get('note', '')}")
            continue
        rel = f"{r['kld_mean'] / base['kld_mean']:.2f}x" if base and base["kld_mean"] else ""
        lines.append(f"{r['method']:8} {'ok':11} {r['bytes']:>12,} {r['kld_mean']:>9.4f} {rel:>8} "
                     f"{r['ppl']:>8.2f} {r['top1']:>6.3f} {r['quantize_s']:>8.1f} "
                     f"{r['peak_rss_mb']:>11.0f}  {r.get('note', '')}")
    ref = next((r["ppl_reference"] for r in rows if r.get("ppl_reference")), None)
    if ref:
        lines.append(f"float model perplexity on the same tokens: {ref:.2f}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--text", type=Path, default=None, help="held-out text (default: the bundled sample)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--out-dir", type=Path, default=None, help="keep the outputs here")
    ap.add_argument("--calib-sequences", type=int, default=32)
    ap.add_argument("--calib-length", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--dwq-lr", type=float, default=1e-5)
    ap.add_argument("--dwq-epochs", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not (args.model / "config.json").is_file():
        raise SystemExit(f"{args.model} is not a model folder (no config.json).")
    if args.worker:
        import mlx.core as mx

        mx.set_default_device(mx.cpu)
        return _worker(args)
    text = args.text.read_text() if args.text else None
    rows = run_peers(args.model, args.bits, args.group_size, text, out_dir=args.out_dir,
                     methods=args.methods, calib_sequences=args.calib_sequences,
                     calib_length=args.calib_length, max_tokens=args.max_tokens,
                     context=args.context, dwq_lr=args.dwq_lr, dwq_epochs=args.dwq_epochs)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"{args.model}: {args.bits}-bit, group {args.group_size}")
        print(_table(rows))


if __name__ == "__main__":
    main()
