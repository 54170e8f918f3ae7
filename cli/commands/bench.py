"""``infovae bench``: speed and memory benchmarks against baselines measured in the same run."""
from __future__ import annotations

import click

from ..main import CONTEXT_SETTINGS, LazyGroup

BENCHMARKS = {
    "regularizers": "infovae.cli.commands.bench_regularizers:regularizers",
    "decoders": "infovae.cli.commands.bench_decoders:decoders",
}


@click.group(cls=LazyGroup, lazy_commands=BENCHMARKS, context_settings=CONTEXT_SETTINGS)
def bench():
    """Benchmarks that print ratios against a baseline measured in the same run.

    \b
    Examples:
      infovae bench regularizers --sizes 256,1024 --dims 8,32
      infovae bench regularizers --device cuda --out bench.json
      infovae bench decoders --json > decoders.json
    """
