"""Each regularizer's share of a training step.

For a model (encoder, decoder, latent dimension, data shape) and each divergence
(mmd, stein, adversarial, kl) it times, interleaved round by round on random data
of the model's kind:

- ``step``: one training step as the trainer runs it: posterior, reparameterised
  codes, reconstruction, the divergence, backward, Adam; for divergences with
  their own optimizer (adversarial) also their ``update`` on the step's codes;
- ``base``: the same step with no divergence;
- ``reg``: the divergence alone: its forward on the step's codes (detached,
  requiring grad) and its backward to them, plus its ``update`` if it has one.

``share`` = reg / step (the regularizer's fraction of the step, measured
directly) and ``share_by_difference`` = (step - base) / step (the extra time the
step takes; noisier, it is a difference of two medians). Times are medians (or
minima, ``stat="min"``) in seconds; on a shared machine compare shares from one run.
"""
from __future__ import annotations

import platform
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

import infovae
from infovae import DataSpec

from .regularizers import time_interleaved

DIVERGENCES = ("mmd", "stein", "adversarial", "kl")
# (name, data kind, shape, encoder, decoder, latent dim): the CLI's default model on digits,
# and a conv encoder with a PixelCNN decoder on binary 28 x 28 images.
CASES = {
    "default": ("binary", (1, 8, 8), "mlp", "bernoulli-mlp", 8),
    "conv-pixelcnn": ("binary", (1, 28, 28), "conv", "pixelcnn", 8),
}
# The CLI's default weight for mmd; the others at 1 (the weight does not change the cost).
WEIGHTS = {"mmd": 100.0, "stein": 1.0, "adversarial": 1.0, "kl": 1.0}


def _objective(names: Sequence[str]):
    from infovae.objective import Objective

    reg = infovae.registry()
    return Objective([(n, WEIGHTS[n], reg.create("divergences", n, {})) for n in names])


def _model(case: str, seed: int):
    from infovae.model import InfoVAE

    kind, shape, enc, dec, latent = CASES[case]
    spec = DataSpec(kind, shape)
    reg = infovae.registry()
    torch.manual_seed(seed)
    model = InfoVAE(spec, latent, reg.create("encoders", enc, {}, spec, latent), reg.create("decoders", dec, {}, spec, latent))
    return spec, model


def _step_fn(model, objective, x: torch.Tensor) -> Callable[[], Any]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, foreach=True)
    div_opts = {}
    for name, div in objective.divergences.items():
        o = div.configure_optimizer() if hasattr(div, "configure_optimizer") else None
        if o is not None:
            div_opts[name] = o

    def step():
        loss, _, z = objective(model, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for name, o in div_opts.items():
            objective.divergences[name].update(z.detach(), model.prior, o)

    return step


def _reg_fn(model, objective, name: str, x: torch.Tensor) -> Callable[[], Any]:
    """The divergence alone on the step's codes: forward, backward to its inputs (the codes,
    or for kl the posterior's parameters, as leaves), and its own update if it has one."""
    from torch.distributions import Independent, Normal

    div = objective.divergences[name]
    with torch.no_grad():
        q = model.posterior(x)
        z0 = q.rsample()
        loc, scale = q.mean.detach(), q.stddev.detach()
    opt = div.configure_optimizer() if hasattr(div, "configure_optimizer") else None

    def reg():
        z = z0.detach().requires_grad_(True)
        if name == "kl":
            qq = Independent(Normal(loc.clone().requires_grad_(True), scale.clone().requires_grad_(True)), 1)
        else:
            qq = q
        div(z, qq, model.prior).backward()
        if opt is not None:
            div.update(z.detach(), model.prior, opt)

    return reg


def run(cases: Sequence[str] = tuple(CASES), divergences: Sequence[str] = DIVERGENCES, batch_size: int = 64,
        repeats: int = 21, seed: int = 0, stat: str = "median", progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """All cases x divergences; a JSON-ready dict with one row each (see the module doc)."""
    say = progress or (lambda msg: None)
    rows: List[Dict[str, Any]] = []
    for case in cases:
        if case not in CASES:
            raise ValueError(f"unknown case {case!r}; choose from {', '.join(CASES)}")
        g = torch.Generator().manual_seed(seed)
        for name in divergences:
            if name not in DIVERGENCES:
                raise ValueError(f"unknown divergence {name!r}; choose from {', '.join(DIVERGENCES)}")
            say(f"{case}: {name}")
            spec, model = _model(case, seed)
            x = infovae.to_model(torch.randint(0, spec.num_levels, (batch_size, *spec.shape), generator=g).to(torch.uint8), spec)
            obj = _objective([name])
            base_obj = _objective([])
            fns = {"step": _step_fn(model, obj, x), "base": _step_fn(model, base_obj, x), "reg": _reg_fn(model, obj, name, x)}
            t = time_interleaved(fns, torch.device("cpu"), repeats, stat)
            rows.append({
                "case": case, "encoder": CASES[case][2], "decoder": CASES[case][3], "data": f"{spec.kind} {spec.shape}",
                "divergence": name, "batch_size": batch_size, "step_s": t["step"], "base_s": t["base"], "reg_s": t["reg"],
                "share": t["reg"] / t["step"], "share_by_difference": (t["step"] - t["base"]) / t["step"],
            })
    from infovae.functional import native

    return {"device": f"cpu ({platform.processor() or platform.machine()})", "torch": torch.__version__,
            "native_kernels": native.state(),
            "threads": torch.get_num_threads(), "repeats": repeats, "stat": stat, "rows": rows}


def table(result: Dict[str, Any]):
    from rich.table import Table

    t = Table(title=f"regularizer share of a training step ({result['threads']} threads, torch {result['torch']}, "
                    f"{result['stat']} of {result['repeats']}, C kernels {result.get('native_kernels', '?')})")
    for col in ("case", "divergence", "batch", "step ms", "no-div step ms", "reg ms", "share", "share by diff"):
        t.add_column(col, justify="left" if col in ("case", "divergence") else "right")
    for r in result["rows"]:
        t.add_row(r["case"], r["divergence"], str(r["batch_size"]), f"{1e3 * r['step_s']:.2f}", f"{1e3 * r['base_s']:.2f}",
                  f"{1e3 * r['reg_s']:.2f}", f"{100 * r['share']:.1f}%", f"{100 * r['share_by_difference']:.1f}%")
    t.caption = "share: regularizer forward+backward (+ its own update) / full step; share by diff: (step - no-div step) / step"
    return t
