"""Built-in datasets (registration only; torch-free)."""
from infovae import Option, hookimpl


@hookimpl
def register_datasets(register):
    pass
