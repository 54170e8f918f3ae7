"""Cost per example of the likelihood estimators on the Table 1 model (binarized MNIST 28x28, z = 5,
conv encoder, gated PixelCNN decoder: the plugin's defaults, or ``--pixelcnn LAYERSxCHANNELS``), measured on this machine.

Times a few real estimator calls at small settings and scales them to the evaluation settings:
IS costs K decoder evaluations per example (forward only), AIS costs (T x L + 1) x (S + P)
forward+backward evaluations (T temperatures, L leapfrog steps, S chains, P pilot chains). Weights are random: the cost of the
network does not depend on them.

    python benchmarks/likelihood_cost.py                   # CPU, 64 rows per call
    python benchmarks/likelihood_cost.py --device cuda --rows 4096
    python benchmarks/likelihood_cost.py --pixelcnn 2x16     # the CPU Table 1's small PixelCNN
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

import infovae
from infovae.build import build_model, make_run_spec
from infovae.estimators import ais_log_likelihood
from infovae.metrics.likelihood import importance_log_likelihood
from infovae.runs import TrainerConfig


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/binarized_mnist.npz")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rows", type=int, default=64, help="decoder rows per call (examples x samples)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--K", type=int, default=5000, help="IS samples per example to scale to")
    ap.add_argument("--ais", default="500,16,10", help="T,S,L to scale AIS to")
    ap.add_argument("--pilot-chains", type=int, default=4, help="the AIS pilot's chains to scale to (ais_log_likelihood's default)")
    ap.add_argument("--pixelcnn", default="5x32", help="LAYERSxCHANNELS of the gated PixelCNN (5x32: the plugin's default)")
    args = ap.parse_args(argv)
    layers, channels = (int(v) for v in args.pixelcnn.split("x"))
    T, S, L = (int(v) for v in args.ais.split(","))
    reg = infovae.registry()
    spec, _ = make_run_spec(dataset="binarized-mnist", dataset_options={"path": str(args.data)}, latent_dim=5,
                            encoder="conv", encoder_options={}, decoder="pixelcnn",
                            decoder_options={"layers": layers, "channels": channels},
                            divergences=[("mmd", 10.0, {})], trainer=TrainerConfig(), reg=reg)
    torch.manual_seed(0)
    model, _ = build_model(spec, reg)
    model = model.to(args.device).eval()
    x = torch.bernoulli(torch.full((args.rows, 1, 28, 28), 0.2, device=args.device))
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    g = lambda: torch.Generator(device=args.device).manual_seed(0)  # noqa: E731

    def timed(fn):
        out = []
        for _ in range(args.repeats):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            out.append(time.perf_counter() - t0)
        return statistics.median(out)

    # IS with q(z|x): 1 sample for each of `rows` examples = `rows` forward rows.
    t_is = timed(lambda: importance_log_likelihood(model, x, 1, generator=g(), batch_size=args.rows))
    # AIS: rows = 1 chain x `rows` examples, 2 temperatures x 2 leapfrog steps = 4 forward+backward (+1 initial).
    # No pilot run here (pilot_chains=0): with the default pilot of 4 chains the call does 5 chains' work, which
    # the division below would count as one (that overstated forward+backward cost 5x before this fix).
    t_ais = timed(lambda: ais_log_likelihood(model, x, steps=2, chains=1, leapfrog_steps=2, pilot_chains=0,
                                             generator=g(), batch_size=args.rows))
    per_fb_row = t_ais / (2 * 2 + 1) / args.rows
    # Refined proposal: 50 Adam steps x 8 samples forward+backward, then K forward.
    per_fwd_row = t_is / args.rows
    res = {
        "machine": f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}",
        "pixelcnn": args.pixelcnn,
        "decoder_rows_per_call": args.rows,
        "forward_seconds_per_row": per_fwd_row,
        "forward_backward_seconds_per_row": per_fb_row,
        f"is_seconds_per_example_K{args.K}": per_fwd_row * args.K,
        f"refined_is_seconds_per_example_K{args.K}": per_fwd_row * args.K + per_fb_row * 50 * 8,
        # T x L forward+backward per chain (+1 initial), for the S chains and the pilot's chains.
        f"ais_seconds_per_example_T{T}_S{S}_L{L}_pilot{args.pilot_chains}": per_fb_row * (T * L + 1) * (S + args.pilot_chains),
    }
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
