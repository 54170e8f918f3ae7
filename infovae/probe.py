"""Probe a freshly built model and objective on a tiny batch before a run directory exists.

Each failure is one ``PluginBuildError`` line naming the plugin, its distribution and version,
what it did and what it must do instead. The probe works on deep copies under a forked RNG, so
the training trajectory (and any lazily shaped module) is exactly as without it.
"""
from __future__ import annotations

import copy
from typing import Optional

import torch

from .errors import InfovaeError, PluginBuildError
from .registry import Registry, describe_plugin, registry as default_registry
from .runs import RunSpec

PROBE_BATCH = 4


def _probe_data(spec: RunSpec, n: int, device: torch.device) -> torch.Tensor:
    """n random examples as model values on the data's grid."""
    from .data import to_model

    g = torch.Generator().manual_seed(0)
    levels = spec.data.num_levels
    x = torch.randint(0, levels, (n, *spec.data.shape), generator=g, dtype=torch.uint8)
    return to_model(x, spec.data).to(device)


def probe_training(spec: RunSpec, model, objective, reg: Optional[Registry] = None, batch: int = PROBE_BATCH) -> None:
    """Run the encoder, the decoder and every divergence once on ``batch`` probe examples.

    Raises PluginBuildError when a plugin raises, or returns something outside its contract:
    the encoder a distribution of the wrong shape, the decoder a log-likelihood that is not (B,)
    finite, a divergence a value that is not a finite, 0-dim, float32 tensor connected to the codes.
    """
    reg = reg or default_registry()
    enc = describe_plugin(reg.info("encoders", spec.encoder.name))
    dec = describe_plugin(reg.info("decoders", spec.decoder.name))
    device = next((t.device for t in list(model.parameters()) + list(model.buffers())), torch.device("cpu"))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        model = copy.deepcopy(model).train()
        objective = copy.deepcopy(objective).train()
        x = _probe_data(spec, batch, device)
        q = _call(lambda: model.posterior(x), enc, f"on a probe batch of {batch} examples")
        try:
            z = q.rsample()
        except Exception as exc:  # noqa: BLE001
            raise PluginBuildError(f"{enc}: the distribution it returned cannot rsample ({type(exc).__name__}: {exc}); "
                                   f"return a reparameterizable distribution such as infovae.diagonal_gaussian(loc, log_scale)") from exc
        if tuple(z.shape) != (batch, spec.latent_dim) or not z.dtype.is_floating_point:
            raise PluginBuildError(f"{enc}: q(z|x).rsample() gave shape {tuple(z.shape)} {z.dtype}; expected ({batch}, {spec.latent_dim}) floating point")
        ll = _call(lambda: model.log_likelihood(x, z), dec, f"on a probe batch of {batch} examples")
        if not isinstance(ll, torch.Tensor) or tuple(ll.shape) != (batch,):
            got = tuple(ll.shape) if isinstance(ll, torch.Tensor) else type(ll).__name__
            raise PluginBuildError(f"{dec}: log_prob(x, z) returned {got} for a batch of {batch}; return (B,) log-likelihoods in nats (summed over dimensions)")
        if not torch.isfinite(ll).all():
            raise PluginBuildError(f"{dec}: log_prob(x, z) is not finite on a probe batch; clamp probabilities or work in log space")
        if not ll.requires_grad:
            raise PluginBuildError(f"{dec}: log_prob(x, z) is detached from the decoder's parameters and z; compute it with autograd enabled (no .detach(), no torch.no_grad)")
        for name, div in objective.divergences.items():
            probe_divergence(reg, name, div, z, q, model.prior)


def probe_divergence(reg: Registry, name: str, div, z: torch.Tensor, posterior, prior) -> None:
    """One forward of a divergence on probe codes; its value must be a finite float32 0-dim tensor with a gradient path."""
    who = describe_plugin(reg.info("divergences", name))
    n = z.shape[0]
    value = _call(lambda: div(z, posterior, prior), who, f"on {n} probe codes")
    fix = "Fix the divergence (its contract tests: infovae.testing.check_divergence) or choose another."
    if not isinstance(value, torch.Tensor):
        raise PluginBuildError(f"{who}: forward returned {type(value).__name__} on {n} probe codes; return a 0-dim float32 tensor. {fix}")
    if value.dim() != 0:
        raise PluginBuildError(f"{who}: forward returned shape {tuple(value.shape)} on {n} probe codes; return a 0-dim tensor (reduce with .mean() or .sum()). {fix}")
    if value.dtype != torch.float32:
        raise PluginBuildError(f"{who}: forward returned dtype {value.dtype}; divergences return float32 (compute in float32, e.g. z.float()). {fix}")
    if not torch.isfinite(value):
        raise PluginBuildError(f"{who}: forward returned {float(value.detach())} on {n} probe codes; guard logs, divisions and square roots. {fix}")
    if not value.requires_grad:
        raise PluginBuildError(f"{who}: forward returned a value with no gradient path to the codes or the posterior (detached, or computed "
                               f"under torch.no_grad); the encoder would get no signal from it. {fix}")


def _call(fn, who: str, where: str):
    try:
        return fn()
    except InfovaeError:
        raise
    except Exception as exc:  # noqa: BLE001 - the boundary: name the plugin
        text = str(exc).splitlines()[0] if str(exc) else ""
        raise PluginBuildError(f"{who} raised {type(exc).__name__} {where}: {text}. Fix the plugin or choose another; "
                               f"--debug shows the traceback.") from exc
