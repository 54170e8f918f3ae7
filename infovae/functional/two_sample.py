"""Permutation two-sample test with the MMD^2 statistic."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .distances import check_pair, exact_float_math, kernel_sweep
from .mmd import Bandwidth, check_estimator, check_kernel, kernel_for, mmd, parse_bandwidth, prepared_pair, weights

__all__ = ["mmd_permutation_test", "PermutationTest"]

# Columns of the (N, permutations) indicator block per sweep: at most 2^24
# entries (64 MiB in float32); larger runs take several sweeps.
_MAX_BLOCK_ENTRIES = 1 << 24


class PermutationTest(NamedTuple):
    statistic: torch.Tensor  # 0-dim: mmd(x, y, ...) exactly as ``mmd`` returns it
    p_value: torch.Tensor  # 0-dim float64: (1 + #{permuted >= observed}) / (1 + n_permutations)


def mmd_permutation_test(
    x: torch.Tensor,
    y: torch.Tensor,
    kernel: str = "rbf",
    bandwidth: Bandwidth = "median",
    estimator: str = "biased",
    n_permutations: int = 1000,
    generator: Optional[torch.Generator] = None,
    *,
    block_size: Optional[int] = None,
) -> PermutationTest:
    """Test H0: x (n, d) and y (m, d) come from the same distribution.

    The statistic is MMD^2 (``mmd`` with the same arguments; a "median"
    bandwidth is resolved once on the pooled sample, which relabelling does
    not change). Its null distribution is sampled by relabelling the pooled
    sample at random ``n_permutations`` times; the p-value
    (1 + #{T_perm >= T_obs}) / (1 + n_permutations) is valid (never
    anti-conservative), permuted statistics within rounding of T_obs counting
    as ties. All permutations are evaluated together: for indicator columns
    A (N x P) one sweep of the kernel matrix gives K A, and every statistic
    follows from the block sums a'Ka, a'K(1-a), (1-a)'K(1-a). Permutations
    are drawn with ``generator`` (on its device) or the default generator.
    """
    check_kernel(kernel)
    check_estimator(estimator)
    parse_bandwidth(bandwidth)
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, int) or n_permutations < 1:
        raise ValueError(f"n_permutations must be a positive integer, got {n_permutations!r}")
    check_pair(x, y, 2 if estimator == "unbiased" else 1)
    device = x.device
    with exact_float_math(device), torch.no_grad():
        a, b, _ = prepared_pair(x.detach(), y.detach())
        spec = kernel_for(kernel, bandwidth, a, b)
        # The statistic through ``mmd`` itself, so that it equals mmd(x, y, ...) bitwise
        # whichever path (fused or tiled) mmd takes.
        statistic = mmd(x.detach(), y.detach(), kernel, bandwidth, estimator, block_size=block_size)
        n, m = a.shape[0], b.shape[0]
        big = n + m
        pooled = torch.cat([a, b])
        w, const = weights(n, m, estimator, spec.k0)
        (axx, axy), (_, ayy) = w
        # Rounding level of a statistic (its terms are at most k0 * |weight| * count).
        tol = 64.0 * torch.finfo(pooled.dtype).eps * spec.k0 * (abs(axx) * n * n + abs(ayy) * m * m + 2 * abs(axy) * n * m)

        gen_device = generator.device if generator is not None else device
        chunk = max(1, min(n_permutations + 1, _MAX_BLOCK_ENTRIES // big))
        stats = []
        done = 0
        while done < n_permutations + 1:
            cols = min(chunk, n_permutations + 1 - done)
            keys = torch.rand(cols, big, generator=generator, device=gen_device)
            members = keys.argsort(1)[:, :n].to(device)
            ind = torch.zeros(cols, big, dtype=pooled.dtype, device=device)
            ind.scatter_(1, members, 1.0)
            if done == 0:
                ind[0] = 0.0
                ind[0, :n] = 1.0  # the observed labelling, through the same arithmetic
            rhs = torch.cat([torch.ones(big, 1, dtype=pooled.dtype, device=device), ind.T], 1)
            prod = kernel_sweep(pooled, (big,), spec, block=block_size, rhs=rhs).prod.double()
            row = prod[:, 0]  # K 1
            ind64 = ind.double()
            s_aa = (ind64.T * prod[:, 1:]).sum(0)  # a' K a
            s_ab = ind64 @ row - s_aa  # a' K (1 - a)
            s_bb = row.sum() - s_aa - 2.0 * s_ab  # (1 - a)' K (1 - a)
            stats.append(axx * s_aa + ayy * s_bb + 2.0 * axy * s_ab + const)
            done += cols
        stats = torch.cat(stats)
        exceed = (stats[1:] >= stats[0] - tol).sum()
        p_value = (1.0 + exceed.double()) / (1.0 + n_permutations)
    return PermutationTest(statistic, p_value)
