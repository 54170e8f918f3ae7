"""Built-in decoders (registration only; torch-free)."""
from infovae import Option, hookimpl
from infovae import ACTIVATION_NAMES as _activations

# Data kinds each decoder models: declared here once; the classes read these (``supports``).
SUPPORTS = {
    "bernoulli-mlp": ("binary",),
    "bernoulli-conv": ("binary",),
    "pixelcnn": ("binary", "gray8"),
    "pixelcnnpp": ("gray8", "rgb8"),
}


@hookimpl
def register_decoders(register):
    register(
        "bernoulli-mlp",
        "infovae.plugins.decoders.bernoulli:BernoulliMLP",
        summary="Factorized Bernoulli p(x|z) with logits from a fully connected network.",
        options=[
            Option("hidden", int, 256, "width of each hidden layer", minimum=1),
            Option("layers", int, 2, "number of hidden layers", minimum=0),
            Option("activation", str, "relu", "hidden activation", choices=_activations),
        ],
        supports=SUPPORTS["bernoulli-mlp"],
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
        supports=SUPPORTS["bernoulli-conv"],
    )
    register(
        "pixelcnn",
        "infovae.plugins.decoders.pixelcnn:PixelCNN",
        summary="Gated PixelCNN p(x|z) (van den Oord et al. 2016), z in every gate; Bernoulli or 256-way output.",
        options=[
            Option("layers", int, 5, "gated layers (vertical + horizontal stack)", minimum=1),
            Option("channels", int, 32, "channels of each stack", minimum=1),
            Option("kernel_size", int, 3, "odd kernel size k: k x k receptive step per layer", minimum=3),
            Option("fast", bool, True, "sample with the cached fast sampler (false: naive loop, one pass per pixel)"),
        ],
        supports=SUPPORTS["pixelcnn"],
    )
    register(
        "pixelcnnpp",
        "infovae.plugins.decoders.pixelcnnpp:PixelCNNpp",
        summary="PixelCNN++ p(x|z) (Salimans et al. 2017), z in every gated resnet block; logistic-mixture output.",
        options=[
            Option("preset", str, "small", "base configuration: small = (1, 32, 5, dropout 0); paper = (5, 160, 10, dropout 0.5)", choices=("small", "paper")),
            Option("nr_resnet", int, None, "gated resnet blocks per resolution (default: from preset)", minimum=1),
            Option("nr_filters", int, None, "channels of both streams (default: from preset)", minimum=1),
            Option("nr_logistic_mix", int, None, "logistic components per pixel (default: from preset)", minimum=1),
            Option("dropout", float, None, "dropout in every block while training (default: from preset)", minimum=0.0, maximum=0.95),
            Option("dropout_mode", str, "element", "what dropout drops: element = single activations (the authors' code); channel = whole channels per example (nn.Dropout2d, as the pclucas14 port; the dropped channels are not convolved)", choices=("element", "channel")),
            Option("fast", bool, True, "sample with the cached fast sampler (false: naive loop, one pass per pixel)"),
        ],
        supports=SUPPORTS["pixelcnnpp"],
    )
