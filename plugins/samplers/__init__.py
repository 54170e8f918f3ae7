"""Built-in samplers (registration only; torch-free)."""
from infovae import Option, hookimpl


@hookimpl
def register_samplers(register):
    pass
