"""Helpers shared by the commands: error translation and output."""
from __future__ import annotations

import functools
import json

import click

from infovae import InfovaeError


def friendly_errors(fn):
    """Turn infovae's own errors into click errors: one line on stderr, exit code 1, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InfovaeError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


def echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


def emit_benchmark(result, json_path, renderables) -> None:
    """Benchmark output: JSON on stdout for ``--json -``; otherwise rich tables, and the
    JSON written atomically to ``json_path`` when one is given."""
    text = json.dumps(result, indent=2)
    if json_path == "-":
        click.echo(text)
        return
    from rich.console import Console

    console = Console()
    for item in renderables:
        console.print(item)
    if json_path:
        from infovae.io import atomic_write_bytes

        atomic_write_bytes(json_path, (text + "\n").encode())
        click.echo(f"wrote {json_path}", err=True)
