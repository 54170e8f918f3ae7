"""Built-in decoders (registration only; torch-free)."""
from infovae import Option, hookimpl


@hookimpl
def register_decoders(register):
    pass
