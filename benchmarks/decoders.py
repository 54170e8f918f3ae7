"""Benchmark the autoregressive decoders: ``python benchmarks/decoders.py --help``.

The same as ``infovae bench decoders``; the logic lives in ``infovae.bench.decoders``.
"""
from infovae.cli.commands.bench_decoders import decoders

if __name__ == "__main__":
    decoders(prog_name="benchmarks/decoders.py")
