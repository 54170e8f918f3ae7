"""pluggy hook specifications: one per plugin kind.

Each hook receives a ``register`` callable owned by the host::

    register(name, factory, *, summary="", options=None, supports=None)

- name:     the plugin's name, unique within its kind (lower-case, dashes).
- factory:  a callable, or an import string "package.module:attribute" that is
            imported only when the plugin is built (keeps start-up free of torch).
- summary:  one line for ``infovae plugins``; defaults to the factory's docstring.
- options:  a sequence of ``infovae.Option`` or a dataclass (field metadata keys:
            help, choices, minimum, maximum, greater_than, less_than); when omitted
            the options come from the factory's keyword parameters, whose
            annotations may carry help and bounds: ``Annotated[int, infovae.Opt(
            help="...", minimum=1)]``. With an import-string factory and no
            ``options=``, ``infovae plugins`` lists the options as undeclared rather
            than import the factory's module: declare them to have them listed.
- supports: decoders only: the data kinds they model ("binary", "gray8", "rgb8").

What the factories receive and return is described on each hook.
"""
from __future__ import annotations

import pluggy

PROJECT = "infovae"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_divergences(register):
    """Register divergences D(q(z) || p(z)).

    factory(**options) -> module with forward(z, posterior, prior) -> 0-dim
    tensor to minimize (see ``infovae.Divergence``).
    """


@hookspec
def register_encoders(register):
    """Register encoders q(z|x).

    factory(spec: DataSpec, latent_dim: int, **options) -> module whose
    forward(x) returns a distribution with batch shape (B,) and event shape
    (latent_dim,), usually ``infovae.diagonal_gaussian(loc, log_scale)``.
    """


@hookspec
def register_decoders(register):
    """Register decoders p(x|z).

    factory(spec: DataSpec, latent_dim: int, **options) -> module with
    log_prob(x, z, reduction) and sample(z, generator) (see ``infovae.Decoder``).
    Pass ``supports=`` with the data kinds the decoder models.
    """


@hookspec
def register_samplers(register):
    """Register samplers.

    factory(**options) -> callable(model, n, generator=None, data=None) -> (n, C, H, W)
    model values (see ``infovae.Sampler``). What the CLI reads from the built sampler:
    ``needs_data`` (bool, default False: ``data`` is then None; True: ``data`` holds n
    examples of the run's data as model values), ``grid_columns`` (int or None:
    columns of the PNG grid, e.g. one chain per row). A sampler with an option named
    ``fast`` (yes/no/auto) gets ``infovae sample --fast/--no-fast``.
    """


@hookspec
def register_datasets(register):
    """Register data sets.

    factory(**options) -> object with ``spec`` (DataSpec), ``splits``,
    ``split(name)`` -> uint8 (N, C, H, W) and ``labels(name)`` -> int64 (N,) or None
    (see ``infovae.Dataset``).
    """


@hookspec
def register_metrics(register):
    """Register evaluation metrics (``infovae evaluate``, ``--track``).

    factory(**options) -> callable(model, x, *, labels=None, generator=None,
    batch_size=1024) -> dict with the headline number under "value" and anything
    else JSON-able (see ``infovae.Metric``). x is (N, C, H, W) model values;
    ``needs_labels`` (bool, default False) asks for (N,) int64 class labels.

    Under torchrun (``infovae evaluate`` and ``--track`` started by torchrun) the metric's
    ``distributed`` attribute says how it runs: "rank0" (the default; a metric that declares
    nothing runs unchanged on rank 0 with all the examples while the other ranks wait) or
    "sharded" with ``rows(model, x, lo, hi, *, generator, batch_size) -> {name: (hi-lo, ...)
    tensor}`` and ``combine(model, rows, *, labels, generator, batch_size) -> dict``: each rank
    computes the rows of its shard, rank 0 combines the gathered rows of all N examples (see
    ``infovae.metrics.sharding``; ``infovae.testing.check_metric`` checks the contract).
    """


@hookspec
def register_loggers(register):
    """Register experiment loggers (trackers).

    factory(run_dir: pathlib.Path, **options) -> object with ``log_params(params: dict)``,
    ``log_scalars(step: int, scalars: dict[str, float])``, ``log_image(step: int, tag: str,
    image: uint8 ndarray (H, W) or (H, W, 3))``, ``log_evaluation(results: dict)`` and
    ``close()`` (see ``infovae.loggers.Logger``). Training wraps every call: a logger that
    raises is warned about once and switched off; the run's own files never depend on it.
    """
