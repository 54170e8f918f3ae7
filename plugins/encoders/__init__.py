"""Built-in encoders (registration only; torch-free)."""
from infovae import ACTIVATION_NAMES as ACTIVATIONS
from infovae import Option, hookimpl


@hookimpl
def register_encoders(register):
    register(
        "mlp",
        "infovae.plugins.encoders.mlp:MLPEncoder",
        summary="Fully connected Gaussian encoder: flatten, hidden layers, (loc, log_scale).",
        options=[
            Option("hidden", int, 256, "width of each hidden layer", minimum=1),
            Option("layers", int, 2, "number of hidden layers", minimum=0),
            Option("activation", str, "relu", "hidden activation", choices=ACTIVATIONS),
        ],
    )
    register(
        "conv",
        "infovae.plugins.encoders.conv:ConvEncoder",
        summary="DCGAN-style Gaussian encoder: stride-2 4x4 convolutions sized to the data, then a linear head.",
        options=[
            Option("channels", int, 32, "channels of the first stage (doubling per stage, at most 8x)", minimum=1),
            Option("layers", int, 0, "number of stride-2 stages; 0 = as many as keep the smaller side >= 4", minimum=0),
            Option("activation", str, "leaky_relu", "activation after each convolution", choices=ACTIVATIONS),
        ],
    )
