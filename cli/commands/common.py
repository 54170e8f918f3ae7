"""Helpers shared by the commands: error translation and output."""
from __future__ import annotations

import functools
import json
import os

import click

from infovae import InfovaeError


def debug_enabled() -> bool:
    """--debug on the command line (``infovae --debug CMD``) or INFOVAE_DEBUG=1: show tracebacks."""
    if os.environ.get("INFOVAE_DEBUG", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.find_root().params.get("debug"))


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def describe_exception(exc: BaseException) -> str:
    """One line for an exception: infovae's own message as is; OS errors with path and reason;
    anything else named as unexpected."""
    if isinstance(exc, InfovaeError):
        return one_line(exc)
    if isinstance(exc, MemoryError):
        return "out of memory; use a smaller model, batch size or data set"
    if isinstance(exc, OSError):
        from infovae.io import os_reason

        where = f" {exc.filename}" if exc.filename else ""
        return one_line(f"cannot access{where}: {os_reason(exc)}")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return one_line(f"unexpected error {type(exc).__name__}: {first} (run 'infovae --debug ...' for the traceback and report it)")


def friendly_errors(fn):
    """Turn every error into a click error: one line on stderr, exit code 1, no traceback.

    infovae's own errors keep their message; OS errors name the path and the reason; anything
    else is reported in one line as unexpected. ``--debug`` / INFOVAE_DEBUG=1 re-raise instead.
    Ctrl-C (a KeyboardInterrupt) is one line and exit code 130.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            if debug_enabled():
                raise
            click.echo("Error: interrupted (a second signal aborts without a final checkpoint)", err=True)
            raise SystemExit(130) from None
        except (Exception, RecursionError) as exc:  # noqa: BLE001 - the one place that turns errors into lines
            if debug_enabled():
                raise
            raise click.ClickException(describe_exception(exc)) from exc

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
