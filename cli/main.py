"""The ``infovae`` command-line application (click).

Start-up is torch-free: commands import torch inside their bodies, so
``infovae --help``, ``--version`` and ``infovae plugins`` stay fast.
"""
from __future__ import annotations

import importlib
import warnings
import signal
import sys

import click

import infovae

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

# command name -> "module:attribute"; imported only when the command runs or help lists it.
COMMANDS = {
    "plugins": "infovae.cli.commands.plugins:plugins",
    "train": "infovae.cli.commands.train:train",
    "sample": "infovae.cli.commands.sample:sample",
    "evaluate": "infovae.cli.commands.evaluate:evaluate",
    "plot": "infovae.cli.commands.plot:plot",
    "compare": "infovae.cli.commands.compare:compare",
    "report": "infovae.cli.commands.report:report",
    "two-sample": "infovae.cli.commands.two_sample:two_sample",
    "bench": "infovae.cli.commands.bench:bench",
    "data": "infovae.cli.commands.data:data",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on demand."""

    def __init__(self, *args, lazy_commands=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def parse_args(self, ctx, args):
        # The raw arguments, so 'infovae train --nproc-per-node N' can hand them to torchrun.
        ctx.meta["infovae.argv"] = list(args)
        return super().parse_args(ctx, args)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Every error is one line on stderr (usage errors too); tracebacks only with --debug."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        from .commands.common import debug_enabled, describe_exception, one_line

        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.UsageError as exc:
            cmd = exc.ctx.command_path if exc.ctx is not None else (prog_name or "infovae")
            click.echo(f"Error: {one_line(exc.format_message())} (see '{cmd} --help')", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"Error: {one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("Error: aborted", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("Error: interrupted", err=True)
            sys.exit(130)
        except (Exception, RecursionError) as exc:  # noqa: BLE001
            if "--debug" in (args if args is not None else sys.argv[1:]) or debug_enabled():
                raise
            click.echo(f"Error: {describe_exception(exc)}", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def get_command(self, ctx, name):
        if name in self.lazy_commands:
            module, _, attr = self.lazy_commands[name].partition(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, lazy_commands=COMMANDS, context_settings=CONTEXT_SETTINGS)
@click.version_option(infovae.__version__, "-V", "--version", prog_name="infovae")
@click.option("--debug", is_flag=True, help="Show Python tracebacks for errors (also INFOVAE_DEBUG=1).")
def cli(debug):
    """infovae: InfoVAE models built from plugins.

    \b
    Examples:
      infovae train                                   # digits, MLP encoder/decoder, defaults
      infovae train --divergence mmd=100 --out runs/mmd
      infovae train --divergence stein=1 --decoder pixelcnnpp --dataset mnist -o dataset.path=~/mnist -o dataset.binarize=none
      infovae sample runs/mmd --sampler markov-chain --out chain.png
      infovae evaluate runs/mmd --json
      infovae compare runs/elbo runs/mmd --evaluate
      infovae report runs/mmd --out mmd.html
      infovae plugins --kind divergences
    """
    if hasattr(signal, "SIGXFSZ") and threading_is_main():
        # Past a file-size limit (ulimit -f) writes then fail with EFBIG, reported in one line.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _show_plugin_warning(message, category, filename, lineno, file=None, line=None):
    """Plugin and logger warnings as one line on stderr, without Python's source-line decoration."""
    from infovae import PluginWarning
    from infovae.loggers import LoggerWarning

    if issubclass(category, (PluginWarning, LoggerWarning)):
        click.echo(f"warning: {message}", err=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def main(argv=None):
    """Console-script entry point."""
    warnings.showwarning = _show_plugin_warning
    return cli.main(args=argv, prog_name="infovae")


if __name__ == "__main__":  # pragma: no cover
    main()
