"""Benchmark: converting straight from the Hub versus downloading first, through a local Hub.

Serves two models from tests/hub_server.py on 127.0.0.1 (the real
huggingface_hub client talks to it through HF_ENDPOINT): the bundled demo
model and a full-width MiniMax-M3 slice (bench_convert's: hidden 6144,
experts of 3072, 64 query heads, a few layers and experts). Each is converted
to uniform 4-bit two ways, each step in its own subprocess:

    stream    configi-studio convert org/name OUT        (byte ranges over HTTP)
    download  snapshot_download(org/name), then configi-studio convert SNAPSHOT OUT

and the table gives wall time, peak RSS (the largest of the steps) and the
peak disk used (download cache + output + the partial folder, in allocated
blocks, sampled every 50 ms), with the ratios stream / download.

    python bench/bench_hub.py [--work DIR] [--layers 1] [--experts 8] [--latency-ms 0]
"""

from __future__ import annotations

import argparse
import os
import filecmp
import shutil
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_convert import build_model, measure  # noqa: E402
from hub_server import HUB_TOKEN, HubServer  # noqa: E402

DEMO = ROOT / "studio" / "resources" / "demo_model"
DOWNLOAD = "import sys; from huggingface_hub import snapshot_download; print(snapshot_download(sys.argv[1]))"


def allocated(paths: list[Path]) -> int:
    """Bytes the files under `paths` occupy on disk (sparse output shards count what is written)."""
    total = 0
    for path in paths:
        for folder, _, files in os.walk(path):
            for name in files:
                try:
                    st = os.lstat(os.path.join(folder, name))
                except OSError:
                    continue
                total += st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
    return total


class DiskPeak:
    """Samples the disk used under some folders while a step runs."""

    def __init__(self, paths: list[Path], interval_s: float = 0.05):
        self.paths, self.interval_s, self.peak = paths, interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, allocated(self.paths))
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, allocated(self.paths))


def clean(*paths: Path) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(path.parent / f".{path.name}.partial", ignore_errors=True)


def run_both(repo: str, commit: str, work: Path, env_base: dict) -> dict:
    python = sys.executable
    out = {}
    for way in ("stream", "download"):
        cache, dest = work / f"cache-{way}", work / f"out-{way}"
        clean(cache, dest)
        cache.mkdir(parents=True)
        os.environ.update({**env_base, "HF_HUB_CACHE": str(cache)})
        steps = []
        with DiskPeak([cache, dest, dest.parent / f".{dest.name}.partial"]) as disk:
            if way == "stream":
                steps.append(measure([python, "-m", "studio", "convert", repo, str(dest), "--policy", "uniform-4bit"]))
            else:
                steps.append(measure([python, "-c", DOWNLOAD, repo]))
                snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
                steps.append(measure([python, "-m", "studio", "convert", snapshot, str(dest),
                                      "--policy", "uniform-4bit"]))
        out[way] = {"wall_s": sum(s["wall_s"] for s in steps), "peak_rss": max(s["peak_rss"] for s in steps),
                    "peak_disk": disk.peak, "output": allocated([dest])}
        clean(cache)
    a, b = work / "out-stream", work / "out-download"
    names = sorted(p.name for p in a.glob("*.safetensors"))
    same = names == sorted(p.name for p in b.glob("*.safetensors")) and \
        all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)
    clean(work / "out-stream", work / "out-download")
    out["identical"] = same
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/configi-bench-hub"))
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added before each ranged response")
    args = parser.parse_args()

    slice_folder = build_model(Path("/tmp/configi-bench-convert") / f"m3-bf16-{args.layers}L-{args.experts}E",
                               args.layers, args.experts)
    models = [("demo model", "bench/demo", DEMO), (f"M3 slice {args.layers}L {args.experts}E", "bench/m3-slice",
                                                   slice_folder)]
    with HubServer(tokens=(HUB_TOKEN,), lifetime_s=6 * 3600) as hub:
        hub.latency_s = args.latency_ms / 1000
        commits = {repo: hub.add_folder(repo, folder) for _, repo, folder in models}
        env = {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": HUB_TOKEN, "HF_HUB_DISABLE_XET": "1",
               "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
        results = [(label, folder, run_both(repo, commits[repo], args.work, env)) for label, repo, folder in models]

    print(f"\n{'model':<22}{'way':<10}{'wall s':>9}{'peak RSS MB':>13}{'peak disk MB':>14}{'output MB':>11}")
    for label, folder, r in results:
        size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
        for way in ("stream", "download"):
            x = r[way]
            print(f"{label:<22}{way:<10}{x['wall_s']:>9.1f}{x['peak_rss'] / 1e6:>13.0f}{x['peak_disk'] / 1e6:>14.0f}"
                  f"{x['output'] / 1e6:>11.0f}")
        s, d = r["stream"], r["download"]
        print(f"{'':<22}{'ratio':<10}{s['wall_s'] / d['wall_s']:>9.2f}{s['peak_rss'] / d['peak_rss']:>13.2f}"
              f"{s['peak_disk'] / d['peak_disk']:>14.2f}   source {size / 1e6:.0f} MB; "
              f"outputs byte-identical: {r['identical']}")


if __name__ == "__main__":
    start = time.monotonic()
    main()
    print(f"bench took {time.monotonic() - start:.0f} s")
