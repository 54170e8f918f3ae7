"""Built-in divergences (registration only; torch-free)."""
from infovae import Option, hookimpl


@hookimpl
def register_divergences(register):
    register(
        "kl",
        "infovae.plugins.divergences.kl:KLDivergence",
        summary="Analytic mean KL(q(z|x) || p(z)) per example; weight 1 gives the ELBO.",
        options=[],
    )
