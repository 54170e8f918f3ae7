"""Where one PixelCNN++ training step spends its time: ours against the pclucas14/pixel-cnn-pp port.

Profiles one optimizer step (forward, loss, backward, Adam) of each with torch.profiler on one
thread, ``repeats`` times alternated, and prints per contender the self CPU milliseconds of the
least contended repeat, summed into buckets by operator name (a markdown table). The profiler adds
a per-operator overhead, which inflates the contender with more (smaller) operators (the port):
compare buckets, and take step ratios from ``infovae bench decoders --peer-path``.

    OMP_NUM_THREADS=1 python benchmarks/pcnn_profile.py small|paper OUT.json [--repeats 3] [--peer-path DIR]

small: batch 16, (1 resnet, 32 filters, 5 logistics); paper: batch 4, (5, 160, 10); dropout 0.5.
The port is read from ``--peer-path`` (default /tmp/pixelcnnpp-port; see infovae/bench/pixelcnnpp_peer.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List

import torch
from torch.profiler import ProfilerActivity, profile

from infovae.bench import pixelcnnpp_peer as pp

CONFIGS = {"small": (16, 1, 32, 5), "paper": (4, 5, 160, 10)}  # batch, nr_resnet, nr_filters, nr_logistic_mix
BUCKETS = [
    ("convolutions (oneDNN, fwd+bwd)", ("convolution", "mkldnn_convolution", "convolution_backward", "_convolution",
                                        "slow_conv_transpose2d")),
    ("1x1 layers as matrix products", ("bmm", "baddbmm", "mm", "addmm")),
    ("elu / concat_elu fwd+bwd", ("elu", "elu_", "elu_backward", "expm1_", "expm1", "maximum", "minimum", "neg", "abs")),
    ("dropout mask (random, compare, where)", ("random_", "where", "ge", "bernoulli_", "clamp_")),
    ("copies / fills / cat / pad", ("copy_", "fill_", "zero_", "cat", "constant_pad_nd")),
    ("Adam (self time, lerp_, addcdiv_, sqrt)", ("Optimizer.step#Adam.step", "Optimizer.zero_grad#Adam.zero_grad",
                                                  "lerp_", "addcdiv_", "sqrt")),
]


def buckets(events) -> Dict[str, float]:
    """Self CPU ms of one profiled step by bucket, plus "everything else" and the total."""
    total = sum(e.self_cpu_time_total for e in events) / 1e3
    row: Dict[str, float] = {}
    for label, names in BUCKETS:
        row[label] = sum(e.self_cpu_time_total for e in events if e.key.split("::")[-1] in names or e.key in names) / 1e3
    row["everything else"] = total - sum(row.values())
    row["total (profiled step)"] = total
    return row


def main(config: str, out_path: str, repeats: int = 3, peer_path: str = "/tmp/pixelcnnpp-port") -> None:
    torch.set_num_threads(1)
    b, nr, nf, nm = CONFIGS[config]
    peer = pp.load_peer(peer_path)
    x = torch.randint(0, 256, (b, 3, 32, 32), generator=torch.Generator().manual_seed(0)).float() / 127.5 - 1.0
    steps = {"ours": pp._ours_step(x, nr, nf, nm, 0.5, 0), "port": pp._peer_step(peer, x, nr, nf, nm, 0)}
    for step in steps.values():
        step()  # warm-up
    rows: Dict[str, List[Dict[str, float]]] = {name: [] for name in steps}
    for r in range(repeats):
        for name in (("ours", "port") if r % 2 == 0 else ("port", "ours")):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                steps[name]()
            rows[name].append(buckets(prof.key_averages()))
    best = {name: min(rs, key=lambda row: row["total (profiled step)"]) for name, rs in rows.items()}
    print("| bucket (self CPU ms, one step) | ours | port |\n| --- | --- | --- |")
    for label in best["ours"]:
        print(f"| {label} | {best['ours'][label]:.0f} | {best['port'][label]:.0f} |")
    with open(out_path, "w") as f:
        json.dump({"config": config, "repeats": repeats, "best": best}, f, indent=1)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="profile one PixelCNN++ training step of ours and of the port")
    ap.add_argument("config", choices=sorted(CONFIGS))
    ap.add_argument("out", help="JSON file to write")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peer-path", default="/tmp/pixelcnnpp-port", help="a checkout of pclucas14/pixel-cnn-pp")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir) or not os.access(out_dir, os.W_OK):
        ap.error(f"cannot write {args.out}: {out_dir} is not a writable folder")
    try:
        main(args.config, args.out, args.repeats, args.peer_path)
    except (ValueError, OSError) as exc:  # no port there, or an unwritable OUT
        sys.exit(f"pcnn_profile: {exc}")
