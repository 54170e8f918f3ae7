"""Metrics on the codes: mutual information, KL, active units, covariance log det, MMD to the prior.

q(z) below is the aggregate posterior (1/N) sum_n q(z|x_n) of the given examples. Units: nats.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Union

import torch
from torch.distributions import kl_divergence

from ._common import (
    LOG_2PI,
    batches,
    cpu_generator,
    encode,
    make_generator,
    mean_and_se,
    model_device,
    model_values,
    standard_normal,
)

# Elements of the (rows, M, D) float64 tile in the mutual-information estimator (128 MiB).
_TILE_ELEMENTS = 2**24


def mixture_log_density(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log (1/M) sum_j N(z_i; loc_j, diag(scale_j^2)) for every row z_i.

    z (P, D), loc and scale (M, D), float64. Returns (P,). Tiled over rows so that at most
    ``_TILE_ELEMENTS`` (row, j, d) terms are held at once.
    """
    m, d = loc.shape
    log_norm = torch.log(scale).sum(-1) + 0.5 * d * LOG_2PI  # (M,)
    rows = max(1, _TILE_ELEMENTS // (m * d))
    out = []
    for s in batches(z.shape[0], rows):
        diff = (z[s, None, :] - loc[None]) / scale[None]  # (r, M, D)
        log_q = -0.5 * diff.pow(2).sum(-1) - log_norm[None]  # (r, M)
        out.append(torch.logsumexp(log_q, dim=1) - math.log(m))
    return torch.cat(out)


@torch.no_grad()
def codes_rows(model, x: torch.Tensor, lo: int, hi: int, *, batch_size: int = 1024, metric: str = "codes",
               **_ignored) -> Dict[str, torch.Tensor]:
    """Posterior parameters of the examples lo..hi-1: {"loc", "scale"}, each (hi - lo, D) float64.

    The rows of every metric here that needs all codes at once (under torchrun each rank encodes
    its shard and rank 0 combines the gathered codes). No random draws."""
    x = model_values(model, x)
    if not 0 <= lo < hi <= x.shape[0]:
        raise ValueError(f"rows {lo}..{hi} are not a non-empty range of the {x.shape[0]} examples")
    loc, scale = encode(model, x[lo:hi], batch_size, metric)
    return {"loc": loc, "scale": scale}


def _codes(model, x, batch_size, metric):
    x = model_values(model, x)
    return codes_rows(model, x, 0, x.shape[0], batch_size=batch_size, metric=metric)


def _check_mi_points(n: int, mi_points: Optional[int]) -> int:
    m = n if mi_points is None else int(mi_points)
    if not 2 <= m <= n:
        raise ValueError(f"mi_points must be between 2 and the number of examples ({n}), got {m}")
    return m


@torch.no_grad()
def mutual_information_combine(model, rows: Dict[str, torch.Tensor], *, generator: Optional[torch.Generator] = None,
                               mi_points: Optional[int] = None, split_seed: int = 0, **_ignored) -> Dict[str, object]:
    """``mutual_information`` from the codes of all N examples (``codes_rows``)."""
    loc, scale = rows["loc"], rows["scale"]
    n = loc.shape[0]
    m = _check_mi_points(n, mi_points)
    if m < n:
        keep = torch.randperm(n, generator=cpu_generator(split_seed))[:m].to(loc.device)
        loc, scale = loc[keep], scale[keep]
    device = model_device(model)
    generator = make_generator(generator, device)
    eps = standard_normal(loc.shape, generator, device)
    z = loc + scale * eps
    log_q_self = -0.5 * eps.pow(2).sum(-1) - torch.log(scale).sum(-1) - 0.5 * loc.shape[1] * LOG_2PI
    terms = log_q_self - mixture_log_density(z, loc, scale)
    value, _ = mean_and_se(terms, "mutual-information", "log density ratio")
    return {
        "value": value,
        "log_M": math.log(m),
        "M": m,
        "units": "nats",
        "description": "I_q(x;z) with q(z) ~ mixture of the M posteriors (appendix B.2); at most log M",
    }


@torch.no_grad()
def mutual_information(
    model,
    x: torch.Tensor,
    *,
    generator: Optional[torch.Generator] = None,
    batch_size: int = 1024,
    mi_points: Optional[int] = None,
    split_seed: int = 0,
) -> Dict[str, object]:
    """Mutual information I_q(x; z) under q(x, z) = p_data(x) q(z|x), estimated over M data points.

        I ~= (1/M) sum_i [log q(z_i|x_i) - log (1/M) sum_j q(z_i|x_j)],   z_i ~ q(z|x_i)

    i.e. q(z) is replaced by the mixture of the M posteriors (the InfoVAE paper's appendix B.2
    estimator). Each term is at most log M (the j = i term alone gives the mixture at least
    q(z_i|x_i) / M), so the estimate can never exceed log M: report it beside log M. In expectation
    it is a lower bound on I (it is InfoNCE with the critic log q(z|x)), tight when I << log M.
    M = ``mi_points`` (default: all N examples; a smaller M takes a fixed subset drawn with
    ``split_seed``). Nats.
    """
    x = model_values(model, x)
    n = x.shape[0]
    m = _check_mi_points(n, mi_points)
    if m < n:  # encode only the subset (the combine step draws the same subset from the same seed)
        keep = torch.randperm(n, generator=cpu_generator(split_seed))[:m].to(x.device)
        rows = _codes(model, x[keep], batch_size, "mutual-information")
        return mutual_information_combine(model, rows, generator=generator)
    return mutual_information_combine(model, _codes(model, x, batch_size, "mutual-information"), generator=generator)


@torch.no_grad()
def kl_rows(model, x: torch.Tensor, lo: int, hi: int, *, batch_size: int = 1024, **_ignored) -> Dict[str, torch.Tensor]:
    """Analytic KL(q(z|x) || p(z)) of the examples lo..hi-1: {"kl": (hi - lo,) float64}, nats."""
    x = model_values(model, x)
    if not 0 <= lo < hi <= x.shape[0]:
        raise ValueError(f"rows {lo}..{hi} are not a non-empty range of the {x.shape[0]} examples")
    device = model_device(model)
    prior = model.prior.distribution()
    values = []
    for s in batches(hi - lo, batch_size):
        values.append(kl_divergence(model.posterior(x[lo + s.start:lo + s.stop].to(device)), prior).double())
    return {"kl": torch.cat(values)}


def kl_combine(model, rows: Dict[str, torch.Tensor], **_ignored) -> Dict[str, object]:
    values = rows["kl"]
    mean, se = mean_and_se(values, "kl", "KL")
    return {"value": mean, "std_err": se, "units": "nats per example", "n": int(values.numel()),
            "description": "mean KL(q(z|x) || p(z)), closed form"}


@torch.no_grad()
def kl(model, x: torch.Tensor, *, batch_size: int = 1024) -> Dict[str, object]:
    """Mean analytic KL(q(z|x) || p(z)) over the examples (torch.distributions.kl_divergence), nats,
    with its standard error across examples."""
    x = model_values(model, x)
    return kl_combine(model, kl_rows(model, x, 0, x.shape[0], batch_size=batch_size))


def active_units_combine(model, rows: Dict[str, torch.Tensor], *, threshold: float = 0.01, **_ignored) -> Dict[str, object]:
    """``active_units`` from the codes of all N examples (``codes_rows``)."""
    threshold = float(threshold)
    loc = rows["loc"]
    if loc.shape[0] < 2:
        raise ValueError("active-units needs at least 2 examples to measure a variance")
    var = loc.var(dim=0, unbiased=True)
    active = (var > threshold).nonzero().flatten().tolist()
    return {
        "value": len(active),
        "dim": int(loc.shape[1]),
        "threshold": float(threshold),
        "active": active,
        "variances": var.tolist(),
        "description": f"units u with Cov_x(E_q[z_u|x]) > {threshold:g} (Burda et al.)",
    }


@torch.no_grad()
def active_units(model, x: torch.Tensor, *, batch_size: int = 1024, threshold: float = 0.01) -> Dict[str, object]:
    """Active latent units (Burda et al., 2016): unit u is active when A_u = Var_x(E_q[z_u | x]) > threshold.

    A_u is the sample variance (ddof=1) over the N examples of the posterior mean of unit u;
    threshold 0.01 as in Burda et al. Reports the count, the active indices and every A_u.
    """
    x = model_values(model, x)
    if x.shape[0] < 2:
        raise ValueError("active-units needs at least 2 examples to measure a variance")
    return active_units_combine(model, _codes(model, x, batch_size, "active-units"), threshold=threshold)


def _check_logdet_examples(n: int, d: int) -> None:
    if n <= d:
        raise ValueError(f"logdet-cov needs more examples than latent dimensions ({d}), got {n}")


@torch.no_grad()
def logdet_cov_combine(model, rows: Dict[str, torch.Tensor], *, generator: Optional[torch.Generator] = None,
                       **_ignored) -> Dict[str, object]:
    """``logdet_cov`` from the codes of all N examples (``codes_rows``)."""
    loc, scale = rows["loc"], rows["scale"]
    d = model.latent_dim
    _check_logdet_examples(loc.shape[0], d)
    generator = make_generator(generator, model_device(model))
    z = loc + scale * standard_normal(loc.shape, generator, loc.device)
    zc = z - z.mean(0, keepdim=True)
    cov = zc.T @ zc / (z.shape[0] - 1)
    sign, logdet = torch.linalg.slogdet(cov)
    if float(sign) <= 0:
        raise FloatingPointError("logdet-cov: the covariance of the codes is singular (codes collapse onto a subspace)")
    return {"value": float(logdet) / d, "logdet": float(logdet), "dim": d, "n": int(z.shape[0]),
            "units": "nats per dimension",
            "description": "log det of the sample covariance of z ~ q(z|x) over the data, divided by dim"}


@torch.no_grad()
def logdet_cov(
    model, x: torch.Tensor, *, generator: Optional[torch.Generator] = None, batch_size: int = 1024
) -> Dict[str, object]:
    """(1/D) log det Cov[z], z ~ q(z) (one z ~ q(z|x) per example, sample covariance with ddof=1).

    0 for q(z) = N(0, I); negative when q(z) is more concentrated than the prior, positive when wider.
    Nats per dimension.
    """
    x = model_values(model, x)
    _check_logdet_examples(x.shape[0], model.latent_dim)
    return logdet_cov_combine(model, _codes(model, x, batch_size, "logdet-cov"), generator=generator)


@torch.no_grad()
def mmd_prior_combine(model, rows: Dict[str, torch.Tensor], *, generator: Optional[torch.Generator] = None,
                      kernel: str = "rbf", bandwidth: Union[None, float, str] = None, estimator: str = "biased",
                      **_ignored) -> Dict[str, object]:
    """``mmd_prior`` from the codes of all N examples (``codes_rows``)."""
    from ..functional.mmd import mmd

    loc, scale = rows["loc"], rows["scale"]
    device = model_device(model)
    generator = make_generator(generator, device)
    d = model.latent_dim
    bw = math.sqrt(2.0 * d) if bandwidth is None else bandwidth
    z = (loc + scale * standard_normal(loc.shape, generator, loc.device)).float()
    zp = model.prior.sample(z.shape[0], generator=generator).float()
    value = float(mmd(z, zp, kernel=kernel, bandwidth=bw, estimator=estimator))
    return {
        "value": value,
        "n": int(z.shape[0]),
        "kernel": kernel,
        "bandwidth": bw,
        "estimator": estimator,
        "description": f"MMD^2 ({estimator} estimate, {kernel} kernel, bandwidth={bw}) "
        "between z ~ q(z|x) over the data and as many prior samples",
    }


@torch.no_grad()
def mmd_prior(
    model,
    x: torch.Tensor,
    *,
    generator: Optional[torch.Generator] = None,
    batch_size: int = 1024,
    kernel: str = "rbf",
    bandwidth: Union[None, float, str] = None,
    estimator: str = "biased",
) -> Dict[str, object]:
    """MMD^2 between q(z) and p(z): the codes z_n ~ q(z|x_n) of all N examples (one sample each,
    not the posterior means) against N draws from the prior, by ``infovae.functional.mmd``.

    Kernel: rbf k = exp(-||a - b||^2 / (2 sigma^2)) or imq k = c / (c + ||a - b||^2) (see
    ``infovae.functional.mmd``). ``bandwidth`` None fixes sigma = c = sqrt(2 D): half the mean
    squared distance 2 D between two prior draws for imq, the median heuristic's order of size
    for rbf, and, unlike the data-driven "median" (also accepted), the same kernel for every model
    of a given D, so values compare across models. Biased (V-statistic) estimate by default: >= 0,
    and 0 only for identical samples. Unitless (a squared RKHS distance).
    """
    return mmd_prior_combine(model, _codes(model, x, batch_size, "mmd-prior"), generator=generator, kernel=kernel,
                             bandwidth=bandwidth, estimator=estimator)
