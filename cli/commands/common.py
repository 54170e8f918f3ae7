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


def emit_benchmark(result, as_json: bool, out_path, renderables) -> None:
    """Benchmark output, the same ``--json`` as every command: JSON on stdout with ``--json``,
    otherwise rich tables; with ``--out PATH`` the JSON is also written atomically to PATH."""
    text = json.dumps(result, indent=2)
    if out_path:
        from infovae.io import atomic_write_bytes

        atomic_write_bytes(out_path, (text + "\n").encode())
    if as_json:
        click.echo(text)
    else:
        from rich.console import Console

        console = Console()
        for item in renderables:
            console.print(item)
    if out_path:
        click.echo(f"wrote {out_path}", err=True)
