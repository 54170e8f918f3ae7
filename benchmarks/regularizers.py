"""Benchmark the regularizers: ``python benchmarks/regularizers.py --help``.

The same as ``infovae bench regularizers``; the logic lives in
``infovae.bench.regularizers``.
"""
from infovae.cli.commands.bench_regularizers import regularizers

if __name__ == "__main__":
    regularizers(prog_name="benchmarks/regularizers.py")
