"""Discretized logistic mixture likelihood of PixelCNN++ (Salimans et al. 2017), and its sampler.

Data: 8-bit values v in {0..255} seen by the model as x = v / 127.5 - 1 in [-1, 1];
the bin of level v is [x - 1/255, x + 1/255], widened to (-inf, ...] for v = 0 and
[..., +inf) for v = 255, so the 256 bin probabilities of every logistic sum to one.

Shapes: B batch, K mixture components, C channels (1 or 3), H x W pixels.

- x           (B, C, H, W) model values on the 256-level grid.
- logit_probs (B, K, H, W) unnormalized mixture weights (one mixture per pixel,
              shared by its channels).
- means       (B, K, C, H, W) component means in model units.
- log_scales  (B, K, C, H, W) log of the logistic scales; clamped to
              [``MIN_LOG_SCALE``, ``MAX_LOG_SCALE``] = [-7, 30] (the lower bound as in
              PixelCNN++: a scale of 9e-4 is already far narrower than a bin of width
              2/255 = 7.8e-3; the upper one, a scale of 1e13, only keeps float32 finite).
- coeffs      (B, K, 3, H, W) for C == 3, unconstrained; c = tanh(coeffs) gives the
              PixelCNN++ channel dependence inside every component:
              mean_G += c0 * x_R;  mean_B += c1 * x_R + c2 * x_G.

Numerics. The middle bins use log(sigmoid(a) - sigmoid(b)), a > b, in the exact form
log sigmoid(b) + log(expm1(a - b)) - softplus(a), where a - b = (2/255) / scale is
known in closed form. This never subtracts two nearly equal probabilities, so it
needs no threshold switch to the density (the PixelCNN++ reference code falls back
to log pdf * bin width when the difference of cdfs underflows, which breaks exact
normalization); it stays finite, and so do its gradients, wherever (x - mean) / scale is
finite (e.g. any log-scale and |mean| up to 1e30 in float32).
The edge bins use log sigmoid(a) (v = 0) and -softplus(b) (v = 255). Everything runs
in float32 at least (float64 stays float64), also under autocast.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

__all__ = [
    "MAX_LOG_SCALE",
    "MIN_LOG_SCALE",
    "discretized_logistic_mixture_log_prob",
    "discretized_logistic_mixture_log_prob_packed",
    "logistic_mixture_params",
    "sample_discretized_logistic_mixture",
]

MIN_LOG_SCALE = -7.0
MAX_LOG_SCALE = 30.0  # a scale of 1e13 (the data span 2): keeps (2/255) / scale a normal float32
_HALF_BIN = 1.0 / 255.0


def _compute_dtype(*tensors: Optional[torch.Tensor]) -> torch.dtype:
    dtype = torch.float32
    for t in tensors:
        if t is not None and t.dtype == torch.float64:
            dtype = torch.float64
    return dtype


def _check_shapes(x, logit_probs, means, log_scales, coeffs) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}")
    b, c, h, w = x.shape
    if logit_probs.dim() != 4 or logit_probs.shape[0] != b or tuple(logit_probs.shape[2:]) != (h, w):
        raise ValueError(f"logit_probs must have shape (B, K, H, W) = ({b}, K, {h}, {w}), got {tuple(logit_probs.shape)}")
    k = logit_probs.shape[1]
    want = (b, k, c, h, w)
    for name, t in (("means", means), ("log_scales", log_scales)):
        if tuple(t.shape) != want:
            raise ValueError(f"{name} must have shape (B, K, C, H, W) = {want}, got {tuple(t.shape)}")
    if coeffs is not None:
        if c != 3:
            raise ValueError(f"coeffs model the R->G->B dependence and need C == 3 channels, got C == {c}; pass coeffs=None")
        if tuple(coeffs.shape) != (b, k, 3, h, w):
            raise ValueError(f"coeffs must have shape (B, K, 3, H, W) = {(b, k, 3, h, w)}, got {tuple(coeffs.shape)}")


def _dependent_means(means: torch.Tensor, coeffs: Optional[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """means (B, K, C, H, W) shifted by the earlier channels of x (B, C, H, W) when coeffs are given."""
    if coeffs is None:
        return means
    return _means_from_tanh(means, torch.tanh(coeffs), x)


def _log_bin_probs(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """log P(bin of x) under Logistic(means, exp(log_scales)), log_scales already clamped; (B, K, C, H, W)."""
    inv_s = torch.exp(-log_scales)
    centered = x - means
    plus = inv_s * (centered + _HALF_BIN)  # standardized upper bin edge
    minus = inv_s * (centered - _HALF_BIN)  # standardized lower bin edge
    log_cdf_plus = F.logsigmoid(plus)  # v = 0 takes P(y < x + 1/255)
    log_high_edge = -F.softplus(minus)  # v = 255 takes P(y > x - 1/255)
    # log(sigmoid(plus) - sigmoid(minus)) = log sigmoid(minus) + log expm1(plus - minus) - softplus(plus),
    # with plus - minus = (2/255) / scale in closed form (>= 7e-16 for log-scales <= MAX_LOG_SCALE) and
    # softplus(plus) = plus - log sigmoid(plus)
    log_mid = F.logsigmoid(minus) + torch.log(torch.expm1((2.0 * _HALF_BIN) * inv_s)) + (log_cdf_plus - plus)
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_high_edge, log_mid))


def discretized_logistic_mixture_log_prob(
    x: torch.Tensor,
    logit_probs: torch.Tensor,
    means: torch.Tensor,
    log_scales: torch.Tensor,
    coeffs: Optional[torch.Tensor] = None,
    reduction: str = "sum",
) -> torch.Tensor:
    """log p(x) in nats under a per-pixel mixture of discretized logistics (see the module docstring).

    reduction="sum": (B,) log-probability of each example.
    reduction="none": (B, C, H, W) per-subpixel terms log p(x_c | x_<c) of the chain
    rule inside each pixel (R, then G given R, then B given R and G); they sum to the
    per-pixel log-probability, and the term of channel c does not depend on later channels.
    """
    if reduction not in ("sum", "none"):
        raise ValueError(f"reduction must be 'sum' or 'none', got {reduction!r}")
    _check_shapes(x, logit_probs, means, log_scales, coeffs)
    dtype = _compute_dtype(x, logit_probs, means, log_scales, coeffs)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.to(dtype)
        log_scales = log_scales.to(dtype).clamp(MIN_LOG_SCALE, MAX_LOG_SCALE)
        means = _dependent_means(means.to(dtype), None if coeffs is None else coeffs.to(dtype), x)
        log_comp = _log_bin_probs(x[:, None], means, log_scales)  # (B, K, C, H, W)
        log_mix = torch.log_softmax(logit_probs.to(dtype), dim=1)  # (B, K, H, W)
        if reduction == "sum":  # log p(pixel): mixture over components of the product of all channels
            return torch.logsumexp(log_mix + log_comp.sum(dim=2), dim=1).flatten(1).sum(1)
        # log p(x_1..x_c) for c = 1..C: mixture over components of the running product of channels.
        joint = torch.logsumexp(log_mix[:, :, None] + torch.cumsum(log_comp, dim=2), dim=1)  # (B, C, H, W)
        return torch.cat((joint[:, :1], joint[:, 1:] - joint[:, :-1]), dim=1)


class _PackedLogProb(torch.autograd.Function):
    """(B,) sum over pixels of log p(pixel) from a packed network output, with an analytic backward.

    Forward: the same operations as ``discretized_logistic_mixture_log_prob(..., reduction="sum")``.
    Backward (g of shape (B,)), with w = softmax_k(log pi_k + sum_c l_kc) the posterior of the
    components and p, n the standardized upper and lower bin edges (``plus``, ``minus``):

    - d/d logit_k = g (w_k - pi_k);
    - every l_kc gets G = g w_k; dl/dp = [v = 0] - sigmoid(p) [v < 255],
      dl/dn = [middle] - sigmoid(n) [v > 0];
    - d/d mean = -(G dl/dp + G dl/dn) / scale;
    - d/d log_scale = -(G dl/dp p + G dl/dn n + G [middle] t / (1 - exp(-t))), t = (2/255) / scale,
      zero where the clamp is active;
    - RGB: d/d coeffs through the dependent means, times 1 - tanh^2.

    Saves (B, K, C, H, W) intermediates (a few times the size of the output); no zero-filled
    gradients of slices, one gradient tensor in the layout of the output."""

    @staticmethod
    def forward(ctx, x, out, mixtures):
        b, c, h, w = x.shape
        k = mixtures
        lp, mu, raw_ls, raw_co = logistic_mixture_params(out, c, k)
        log_scales = raw_ls.clamp(MIN_LOG_SCALE, MAX_LOG_SCALE)
        co = torch.tanh(raw_co) if raw_co is not None else None
        means = mu if co is None else _means_from_tanh(mu, co, x)
        inv_s = torch.exp(-log_scales)
        centered = x[:, None] - means
        plus = inv_s * (centered + _HALF_BIN)
        minus = inv_s * (centered - _HALF_BIN)
        log_cdf_plus = F.logsigmoid(plus)
        log_sig_minus = F.logsigmoid(minus)
        gap = (2.0 * _HALF_BIN) * inv_s
        log_mid = log_sig_minus + torch.log(torch.expm1(gap)) + (log_cdf_plus - plus)
        xk = x[:, None]
        log_comp = torch.where(xk < -0.999, log_cdf_plus, torch.where(xk > 0.999, -F.softplus(minus), log_mid))
        log_mix = torch.log_softmax(lp, dim=1)
        joint = log_mix + log_comp.sum(dim=2)  # (B, K, H, W)
        ll = torch.logsumexp(joint, dim=1)  # (B, H, W)
        post = joint.sub_(ll[:, None]).exp_()  # posterior of the components
        inside = (raw_ls >= MIN_LOG_SCALE) & (raw_ls <= MAX_LOG_SCALE)
        ctx.save_for_backward(x, post, log_mix.exp_(), log_cdf_plus.exp_(), log_sig_minus.exp_(), plus, minus,
                              gap, inv_s, inside, co)
        ctx.mixtures, ctx.out_shape = k, out.shape
        return ll.flatten(1).sum(1)

    @staticmethod
    def backward(ctx, g):
        x, post, pi, sig_plus, sig_minus, plus, minus, gap, inv_s, inside, co = ctx.saved_tensors
        b, c = x.shape[:2]
        k = ctx.mixtures
        g4 = g[:, None, None, None]
        grad = torch.empty(ctx.out_shape, dtype=post.dtype, device=post.device)
        torch.sub(post, pi, out=grad[:, :k]).mul_(g4)  # d/d logits
        big = (post * g4)[:, :, None]  # G = g w_k, (B, K, 1, H, W); saved tensors are not changed in place
        low = (x < -0.999).to(post.dtype)[:, None]  # (B, 1, C, H, W)
        high = (x > 0.999).to(post.dtype)[:, None]
        middle = 1.0 - low - high
        g_plus = torch.sub(low, sig_plus * (1.0 - high)).mul_(big)  # G dl/dp
        g_minus = torch.sub(middle, sig_minus * (1.0 - low)).mul_(big)  # G dl/dn
        # t / (1 - exp(-t)) for the log expm1(t) term of the middle bins
        ratio = gap / torch.expm1(-gap).neg_()
        blocks, per = (3, 3) if c == 3 else (2, c)
        rest = grad[:, k:].view(b, blocks, k, per, *x.shape[2:])
        g_ls = g_plus * plus
        g_ls.addcmul_(g_minus, minus).addcmul_(ratio.mul_(middle), big)
        torch.mul(g_ls, inside, out=rest[:, 1]).neg_()
        g_mean = torch.add(g_plus, g_minus, out=rest[:, 0]).mul_(inv_s).neg_()
        if co is not None:
            r, gr = x[:, None, 0], x[:, None, 1]
            dtanh = torch.addcmul(torch.ones_like(co), co, co, value=-1.0)
            gc = rest[:, 2]
            torch.mul(g_mean[:, :, 1], r, out=gc[:, :, 0])
            torch.mul(g_mean[:, :, 2], r, out=gc[:, :, 1])
            torch.mul(g_mean[:, :, 2], gr, out=gc[:, :, 2])
            gc.mul_(dtanh)
        return None, grad, None


def _means_from_tanh(means: torch.Tensor, c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``_dependent_means`` given c = tanh(coeffs) already: (B, K, 3, H, W)."""
    r, g = x[:, None, 0], x[:, None, 1]
    return torch.stack(
        (means[:, :, 0], means[:, :, 1] + c[:, :, 0] * r, means[:, :, 2] + c[:, :, 1] * r + c[:, :, 2] * g), dim=2
    )


def discretized_logistic_mixture_log_prob_packed(x: torch.Tensor, out: torch.Tensor, mixtures: int) -> torch.Tensor:
    """(B,) log p(x) in nats from a packed network output (B, P, H, W) (layout of ``logistic_mixture_params``).

    Equals ``discretized_logistic_mixture_log_prob(x, *logistic_mixture_params(out, C, K))`` (reduction
    "sum") up to rounding; when ``out`` needs a gradient and ``x`` does not, the gradient comes from an
    analytic backward (``_PackedLogProb``) instead of autograd through some forty elementwise steps.
    Computes in float32 at least (float64 stays float64), also under autocast."""
    c = x.shape[1] if x.dim() == 4 else 0
    params = logistic_mixture_params(out, c, mixtures)  # also checks the shapes
    if not (out.requires_grad and torch.is_grad_enabled()) or x.requires_grad or torch.compiler.is_compiling():
        return discretized_logistic_mixture_log_prob(x, *params, reduction="sum")
    _check_shapes(x, *params)
    dtype = _compute_dtype(x, out)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _PackedLogProb.apply(x.to(dtype), out.to(dtype), mixtures)


def logistic_mixture_params(out: torch.Tensor, channels: int, mixtures: int):
    """Split a network output (B, P, H, W) into (logit_probs, means, log_scales, coeffs).

    P = K * (1 + 2 C) for C = 1 (coeffs is None) and K * 10 for C = 3. Layout along P:
    K mixture logits, then C*K means, C*K log-scales and (C = 3) 3*K coefficients,
    each block ordered (component, channel).
    """
    k = mixtures
    blocks = 3 if channels == 3 else 2
    per_block = 3 if channels == 3 else channels
    expected = k * (1 + blocks * per_block)
    if channels not in (1, 3) or out.dim() != 4 or out.shape[1] != expected:
        raise ValueError(
            f"a {channels}-channel mixture of {k} logistics needs outputs (B, {expected}, H, W), got {tuple(out.shape)}"
        )
    b, _, h, w = out.shape
    rest = out[:, k:].reshape(b, blocks, k, per_block, h, w)
    coeffs = rest[:, 2] if channels == 3 else None
    return out[:, :k], rest[:, 0], rest[:, 1], coeffs


def sample_discretized_logistic_mixture(
    logit_probs: torch.Tensor,
    means: torch.Tensor,
    log_scales: torch.Tensor,
    coeffs: Optional[torch.Tensor] = None,
    *,
    uniforms: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Exact draws from the distribution whose log-probability the function above computes.

    Shapes as there; returns x (B, C, H, W) on the 256-level grid v / 127.5 - 1.
    ``uniforms`` (B, 1 + C, H, W) in [0, 1) makes the draw a deterministic function of
    them (used by the autoregressive samplers so that two samplers can share draws):
    uniform 0 picks the component by inverting the cdf of the mixture weights, uniform
    1 + c gives the logistic draw y = mean_c + scale_c * logit(u) of channel c, which is
    rounded to the nearest level and clipped to [0, 255] -- exactly the edge-widened bins
    of the likelihood. The channel dependence uses the already quantized earlier
    channels, as the likelihood does. Without ``uniforms`` they are drawn from ``generator``.
    """
    b, k, c, h, w = means.shape
    _check_shapes(means.new_zeros(b, c, h, w), logit_probs, means, log_scales, coeffs)
    dtype = _compute_dtype(logit_probs, means, log_scales, coeffs)
    if uniforms is None:
        uniforms = torch.rand((b, 1 + c, h, w), generator=generator, device=means.device, dtype=dtype)
    elif tuple(uniforms.shape) != (b, 1 + c, h, w):
        raise ValueError(f"uniforms must have shape (B, 1 + C, H, W) = {(b, 1 + c, h, w)}, got {tuple(uniforms.shape)}")
    with torch.autocast(device_type=means.device.type, enabled=False):
        u = uniforms.to(dtype)
        cdf = torch.cumsum(torch.softmax(logit_probs.to(dtype), dim=1), dim=1)  # (B, K, H, W)
        comp = (cdf < u[:, :1]).sum(dim=1, keepdim=True).clamp(max=k - 1)  # (B, 1, H, W)

        def pick(t: torch.Tensor) -> torch.Tensor:  # (B, K, n, H, W) -> (B, n, H, W) of the chosen component
            return t.to(dtype).gather(1, comp[:, :, None].expand(b, 1, t.shape[2], h, w)).squeeze(1)

        mu = pick(means)
        scale = torch.exp(pick(log_scales).clamp(MIN_LOG_SCALE, MAX_LOG_SCALE))
        co = torch.tanh(pick(coeffs)) if coeffs is not None else None
        noise = torch.logit(u[:, 1:])  # (B, C, H, W); -inf for u == 0 lands in the edge bin
        xs = []
        for ch in range(c):  # channels in order: G's mean uses the quantized R, B's uses R and G
            m = mu[:, ch]
            if co is not None and ch == 1:
                m = m + co[:, 0] * xs[0]
            elif co is not None and ch == 2:
                m = m + co[:, 1] * xs[0] + co[:, 2] * xs[1]
            level = torch.round((m + scale[:, ch] * noise[:, ch] + 1.0) * 127.5).clamp(0.0, 255.0)
            xs.append(level / 127.5 - 1.0)
        return torch.stack(xs, dim=1)
