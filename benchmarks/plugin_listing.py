"""Wall time of `infovae plugins` and `infovae plugins --json` with one outside plugin whose
factory module imports torch and which declares no options= (so listing its options would
import the module), against a baseline `infovae` executable measured in the same run.

    python benchmarks/plugin_listing.py --baseline /path/to/other/venv/bin/infovae [--repeats 5]

Interleaves the two executables, prints medians and the baseline/ours ratio.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REGISTRATION = '''from infovae import hookimpl

@hookimpl
def register_divergences(register):
    register("slowdiv", "toy_slow_impl:Div", summary="factory module imports torch; no options= declared")
'''
IMPL = '''import torch
from infovae import Divergence

class Div(Divergence):
    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def forward(self, z, posterior, prior):
        return self.scale * z.pow(2).mean()
'''


def make_plugin(root: Path) -> None:
    info = root / "toy_slow_listing-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-slow-listing\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[infovae]\nslowdiv = toy_slow_listing\n")
    (root / "toy_slow_listing.py").write_text(REGISTRATION)
    (root / "toy_slow_impl.py").write_text(IMPL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="another infovae executable (e.g. main's venv)")
    ap.add_argument("--ours", default=str(Path(sys.executable).with_name("infovae")))
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        make_plugin(Path(tmp))
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFOVAE_")}
        env["PYTHONPATH"] = tmp
        exes = {"baseline": args.baseline, "ours": args.ours}
        times = {(n, c): [] for n in exes for c in ("plugins", "plugins --json")}
        for _ in range(args.repeats):
            for name, exe in exes.items():
                for command in ("plugins", "plugins --json"):
                    t = time.perf_counter()
                    p = subprocess.run([exe, *command.split()], capture_output=True, text=True, env=env)
                    times[(name, command)].append(time.perf_counter() - t)
                    if p.returncode != 0:
                        print(f"{name} {command}: exit {p.returncode}: {p.stderr.strip()[-300:]}")
    for (name, command), v in times.items():
        print(f"{name:9s} {command:15s} median {statistics.median(v):6.2f} s   {[round(x, 2) for x in v]}")
    for command in ("plugins", "plugins --json"):
        ratio = statistics.median(times[("baseline", command)]) / statistics.median(times[("ours", command)])
        print(f"{command:15s} baseline / ours = {ratio:.2f}")


if __name__ == "__main__":
    main()
