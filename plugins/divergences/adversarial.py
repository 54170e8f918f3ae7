"""Adversarial (Jensen-Shannon) divergence: a discriminator on z, as in the adversarial autoencoder.

A discriminator T(z) (an MLP giving one logit) learns to tell prior draws
(label 1) from codes (label 0) with the logistic loss; D(z) = sigmoid(T(z)) is
its probability that z came from the prior. For the optimal discriminator
D* = p / (p + q) and

    JS(q || p) = log 2 + 1/2 E_p[log D*(z)] + 1/2 E_q[log(1 - D*(z))]     (nats),

i.e. JS = log 2 - L_D* for the discriminator's (equally weighted) logistic loss;
any other discriminator gives a lower bound in expectation.

The encoder minimizes the non-saturating generator loss -E_q[log D(z)]: it
pushes the codes to where the discriminator believes in the prior. (The
saturating form E_q[log(1 - D)], which is the JS term itself, has vanishing
gradients while the discriminator wins.) At the optimum q = p the loss is log 2.

Training loop (driven by the trainer through the generic hook for divergences
with their own state): ``configure_optimizer()`` gives Adam over the
discriminator's parameters only; after each model step the trainer calls
``update(z.detach(), prior, optimizer)``, which takes ``steps`` discriminator
steps on those codes against fresh prior draws. The discriminator's weights
are in this module's ``state_dict`` (saved with the model); the trainer saves
the optimizer's state. ``forward`` never accumulates gradients into the
discriminator: it evaluates it with detached weights.

The latent dimension is unknown when the plugin is built, so the first layer
is a ``torch.nn.LazyLinear``: it takes its shape from the first batch of codes
(``forward`` or ``update``) or from a loaded ``state_dict``. Everything is
computed in float32, also under bf16 autocast.
"""
from __future__ import annotations

import math
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.parameter import is_lazy

from infovae import Divergence, check_options
from infovae.plugins.divergences import ADVERSARIAL_OPTIONS

LOG2 = math.log(2.0)


class AdversarialDivergence(Divergence):
    """JS-GAN regularizer D(q(z) || p(z)) with its own discriminator and optimizer.

    hidden: width of the hidden layers; layers: number of hidden layers (0 gives
    logistic regression on z); lr, beta1, beta2: the discriminator's Adam (keep
    lr below the model's: the InfoVAE paper notes the adversarial objective
    needs a smaller learning rate); steps: discriminator steps per model step.
    """

    properties = frozenset()  # its value depends on the discriminator's training, not only on the samples
    has_value = True

    def __init__(self, hidden: int = 256, layers: int = 2, lr: float = 1e-4, steps: int = 1, beta1: float = 0.5, beta2: float = 0.999):
        super().__init__()
        opts = check_options(ADVERSARIAL_OPTIONS, dict(hidden=hidden, layers=layers, lr=lr, steps=steps, beta1=beta1, beta2=beta2),
                             "divergence 'adversarial'")
        hidden, layers, lr, steps, beta1, beta2 = (opts[k] for k in ("hidden", "layers", "lr", "steps", "beta1", "beta2"))
        self.hidden, self.layers, self.lr, self.steps = int(hidden), int(layers), float(lr), int(steps)
        self.betas = (float(beta1), float(beta2))
        modules = []
        for i in range(self.layers):
            modules += [nn.LazyLinear(self.hidden) if i == 0 else nn.Linear(self.hidden, self.hidden), nn.LeakyReLU(0.2)]
        modules.append(nn.LazyLinear(1) if self.layers == 0 else nn.Linear(self.hidden, 1))
        self.discriminator = nn.Sequential(*modules)

    # -- the discriminator ---------------------------------------------------------------------
    @staticmethod
    def _check(z: torch.Tensor, what: str) -> None:
        if z.dim() != 2 or z.shape[0] < 1:
            raise ValueError(f"{what} must be (n, d) with n >= 1, got shape {tuple(z.shape)}")
        if not z.is_floating_point():
            raise ValueError(f"{what} must be floating point, got {z.dtype}")

    def _materialize(self, z: torch.Tensor) -> None:
        """Give the lazy first layer its input size from a batch of codes (once)."""
        if any(is_lazy(p) for p in self.discriminator.parameters()):
            with torch.no_grad(), torch.autocast(device_type=z.device.type, enabled=False):
                self.discriminator(z[:1].detach().float())

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """(n, d) -> (n,) float32 logits of "z is a prior draw"; D(z) = sigmoid(logits)."""
        self._check(z, "z")
        self._materialize(z)
        with torch.autocast(device_type=z.device.type, enabled=False):
            return self.discriminator(z.float()).squeeze(-1)

    def js_estimate(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """JS(q || p) estimate in nats (0-dim) from codes x (n, d) ~ q and prior draws y (m, d) ~ p:
        log 2 + 1/2 mean log D(y) + 1/2 mean log(1 - D(x)). Exact in expectation for the
        optimal discriminator, a lower bound for any other."""
        self._check(y, "prior samples y")
        lx, ly = self.logits(x), self.logits(y)
        return LOG2 - 0.5 * (F.softplus(-ly).mean() + F.softplus(lx).mean())

    # -- the divergence ------------------------------------------------------------------------
    def forward(self, z: torch.Tensor, posterior, prior) -> torch.Tensor:
        """Non-saturating generator loss -mean_i log D(z_i) in nats (0-dim float32).

        Gradients reach z only; the discriminator is evaluated with detached weights."""
        self._check(z, "z")
        self._materialize(z)
        frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        frozen.update(dict(self.discriminator.named_buffers()))
        with torch.autocast(device_type=z.device.type, enabled=False):
            logit = functional_call(self.discriminator, frozen, (z.float(),)).squeeze(-1)
            return F.softplus(-logit).mean()

    def configure_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.discriminator.parameters(), lr=self.lr, betas=self.betas)

    def update(self, z: torch.Tensor, prior, optimizer: torch.optim.Optimizer) -> Dict[str, float]:
        """``steps`` logistic-loss steps of the discriminator: codes z (n, d) (detached here)
        against n fresh prior draws per step.

        Logs (from the last step, before its parameter update): disc_loss (nats),
        disc_accuracy (fraction of both samples classified right), js = log 2 - disc_loss.
        """
        self._check(z, "z")
        z = z.detach()
        self._materialize(z)
        with torch.enable_grad():
            for _ in range(self.steps):
                y = prior.sample(z.shape[0]).to(device=z.device)
                lz, ly = self.logits(z), self.logits(y)
                loss = 0.5 * (F.softplus(-ly).mean() + F.softplus(lz).mean())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            accuracy = 0.5 * ((ly > 0).float().mean() + (lz < 0).float().mean())
        disc_loss = float(loss.detach())
        return {"disc_loss": disc_loss, "disc_accuracy": float(accuracy), "js": LOG2 - disc_loss}

    def extra_repr(self) -> str:
        return f"lr={self.lr}, steps={self.steps}, betas={self.betas}"
