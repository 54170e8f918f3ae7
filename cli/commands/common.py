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
