"""Built-in encoders (registration only; torch-free)."""
from infovae import Option, hookimpl


@hookimpl
def register_encoders(register):
    pass
