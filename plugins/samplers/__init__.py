"""Built-in samplers (registration only; torch-free)."""
from infovae import Option, hookimpl


@hookimpl
def register_samplers(register):
    register(
        "ancestral",
        "infovae.plugins.samplers.ancestral:AncestralSampler",
        summary="z ~ p(z), x ~ p(x|z): the usual VAE sampler.",
        options=[Option("fast", str, "auto", "autoregressive decoders: cached fast sampling (yes/no/auto)", choices=("auto", "yes", "no"))],
    )
    register(
        "markov-chain",
        "infovae.plugins.samplers.markov_chain:MarkovChainSampler",
        summary="Proposition 1: z ~ q(z|x), x ~ p(x|z), repeated from data or noise.",
        options=[
            Option("steps", int, 10, "transitions x -> z -> x per chain", minimum=1),
            Option("start", str, "noise", "where chains start", choices=("noise", "data")),
            Option("return_chain", bool, False, "return every state of each chain (one chain per grid row)"),
        ],
    )
    register(
        "reconstruct",
        "infovae.plugins.samplers.reconstruct:ReconstructSampler",
        summary="Data beside its reconstruction: x, then x' ~ p(x|z), z ~ q(z|x).",
        options=[Option("use_mean", bool, False, "decode the posterior mean instead of a sample z ~ q(z|x)")],
    )
