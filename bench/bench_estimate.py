"""Open the full MiniMax-M3 replica and re-estimate after one rule change.

Prints: time to open (headers -> inventory -> units -> plan -> estimate), the
same headers read with safetensors' own safe_open as the peer, and the time to
re-estimate after a rule change (target: a few milliseconds).

    .venv/bin/python bench/bench_estimate.py [--format mxfp8|bf16]
"""

import argparse
import statistics
import time

from _replica import m3_replica
from safetensors import safe_open

from studio.core.model.inventory import find_shards, open_model
from studio.core.policy.bit_policy import Layers, Quantize, Rule, load_preset
from studio.core.project import Project


def best_of(fn, n=5):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def peer_open(path):
    count = 0
    shards, _ = find_shards(path)
    for shard in shards:
        with safe_open(str(shard), framework="numpy") as f:
            for key in f.keys():
                f.get_slice(key).get_shape()
                count += 1
    return count


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--format", default="mxfp8", choices=["mxfp8", "bf16"])
    args = parser.parse_args()
    path = m3_replica(args.format)

    t_inventory, inventory = best_of(lambda: open_model(path))
    t_project, project = best_of(lambda: Project(open_model(path), load_preset("config-i")))
    t_peer, entries = best_of(lambda: peer_open(path))
    print(f"MiniMax-M3 {args.format} replica: {len(inventory.shards)} shards, {entries:,} header entries, "
          f"{len(inventory.tensors):,} logical tensors, {len(project.units):,} units")
    print(f"open, headers only (inventory)        {t_inventory * 1e3:8.1f} ms")
    print(f"open to first estimate (whole core)   {t_project * 1e3:8.1f} ms")
    print(f"peer: safetensors safe_open headers   {t_peer * 1e3:8.1f} ms   ratio ours/peer "
          f"{t_inventory / t_peer:.2f}")

    base = project.policy
    variants = [base.with_rules(base.rules + (Rule(("expert_down",), Layers("range", start=10, stop=10 + i),
                                                   Quantize(4)),)) for i in range(20)]
    times = []
    for policy in variants:
        start = time.perf_counter()
        project.set_policy(policy)
        times.append(time.perf_counter() - start)
    est = project.set_policy(base)
    print(f"re-estimate after one rule change     {statistics.median(times) * 1e3:8.2f} ms median, "
          f"{max(times) * 1e3:.2f} ms max over {len(times)}")
    print(f"Config-I: {est.total_bytes / 1e9:.2f} GB, {est.bpw_quantized:.3f} bpw quantized, "
          f"{est.bpw_output:.3f} bpw whole output (seed: ~167 GB, 3.097 bpw)")


if __name__ == "__main__":
    main()
