"""Built-in decoders (registration only; torch-free)."""
from infovae import Option, hookimpl


@hookimpl
def register_decoders(register):
    _activations = ("relu", "leaky_relu", "elu", "gelu", "silu", "tanh")
    register(
        "bernoulli-mlp",
        "infovae.plugins.decoders.bernoulli:BernoulliMLP",
        summary="Factorized Bernoulli p(x|z) with logits from a fully connected network.",
        options=[
            Option("hidden", int, 256, "width of each hidden layer", minimum=1),
            Option("layers", int, 2, "number of hidden layers", minimum=0),
            Option("activation", str, "relu", "hidden activation", choices=_activations),
        ],
        supports=("binary",),
    )
    register(
        "bernoulli-conv",
        "infovae.plugins.decoders.bernoulli:BernoulliConv",
        summary="Factorized Bernoulli p(x|z) with logits from DCGAN-style transposed convolutions sized to the data.",
        options=[
            Option("channels", int, 32, "channels of the largest stage (doubling per smaller stage, at most 8x)", minimum=1),
            Option("layers", int, 0, "number of stride-2 stages; 0 = as many as keep the smaller side >= 4", minimum=0),
            Option("activation", str, "relu", "activation after each layer", choices=_activations),
        ],
        supports=("binary",),
    )
