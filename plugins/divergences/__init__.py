"""Built-in divergences (registration only; torch-free).

The option lists are the single declaration: registration and listing read them, and
each constructor checks its arguments against them with ``infovae.check_options``.
"""
from infovae import Option, bandwidth_option, hookimpl


def kernel_bandwidth(value):
    """bandwidth_option limited to [1e-12, 1e12]: outside it 1 / (2 s^2) under- or overflows."""
    bw = bandwidth_option(value)
    if bw != "median" and not all(1e-12 <= b <= 1e12 for b in bw):
        raise ValueError("each bandwidth must lie in [1e-12, 1e12]")
    return bw


kernel_bandwidth.metavar = bandwidth_option.metavar


KL_OPTIONS = []
MMD_OPTIONS = [
    Option("kernel", str, "rbf", "kernel family: rbf exp(-r/(2 s^2)) or imq c/(c+r), r = squared distance", choices=("rbf", "imq")),
    Option("bandwidth", kernel_bandwidth, (1.0, 2.0, 4.0), "sigma (rbf) or c (imq); a comma list sums kernels; median: per-batch median heuristic"),
    Option("estimator", str, "biased", "biased V-statistic (>= 0) or unbiased U-statistic", choices=("biased", "unbiased")),
    Option("prior_samples", int, 0, "prior draws per step (0: the batch size); at most 10^6 (the prior-prior kernel costs its square)", minimum=0, maximum=1_000_000),
]
STEIN_OPTIONS = [
    Option("bandwidth", kernel_bandwidth, "median", "rbf sigma; a comma list sums kernels; median: SVGD heuristic median/(2 log(n+1))"),
]
ADVERSARIAL_OPTIONS = [
    Option("hidden", int, 256, "width of the discriminator's hidden layers", minimum=1),
    Option("layers", int, 2, "hidden layers of the discriminator (0: logistic regression)", minimum=0),
    Option("lr", float, 1e-4, "discriminator learning rate (Adam); keep it below the model's", greater_than=0.0),
    Option("steps", int, 1, "discriminator steps per model step", minimum=1),
    Option("beta1", float, 0.5, "discriminator Adam beta1", minimum=0.0, less_than=1.0),
    Option("beta2", float, 0.999, "discriminator Adam beta2", minimum=0.0, less_than=1.0),
]


@hookimpl
def register_divergences(register):
    register(
        "kl",
        "infovae.plugins.divergences.kl:KLDivergence",
        summary="Analytic mean KL(q(z|x) || p(z)) per example; weight 1 gives the ELBO.",
        options=KL_OPTIONS,
    )
    register(
        "mmd",
        "infovae.plugins.divergences.mmd:MMDDivergence",
        summary="MMD^2 between the codes and prior draws (rbf or imq kernel, tiled computation).",
        options=MMD_OPTIONS,
    )
    register(
        "stein",
        "infovae.plugins.divergences.stein:SteinDivergence",
        summary="Stein variational gradient (SVGD) on the codes; a surrogate with no meaningful value (not logged).",
        options=STEIN_OPTIONS,
    )
    register(
        "adversarial",
        "infovae.plugins.divergences.adversarial:AdversarialDivergence",
        summary="Jensen-Shannon via a discriminator on z with its own optimizer (adversarial autoencoder).",
        options=ADVERSARIAL_OPTIONS,
    )
