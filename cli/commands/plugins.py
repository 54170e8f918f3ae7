"""``infovae plugins``: list, describe plugins; failures are shown, never fatal.

Listing imports no plugin implementation: options of an import-string factory that
declares none are shown as undeclared. ``--json`` always prints valid JSON, with load
failures, per-plugin errors and slow registration modules inside it."""
from __future__ import annotations

import click

import infovae
from infovae.registry import KINDS, SINGULAR

from .common import echo_json, friendly_errors

KIND_CHOICES = list(KINDS) + list(SINGULAR.values())


def _kind(kind):
    if kind is None:
        return None
    return {v: k for k, v in SINGULAR.items()}.get(kind, kind)


@click.group(invoke_without_command=True)
@click.option("--kind", "-k", type=click.Choice(KIND_CHOICES), help="Only this kind of plugin.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
@friendly_errors
def plugins(ctx, kind, as_json):
    """List installed plugins of every kind, and plugins that failed to load.

    \b
    Examples:
      infovae plugins
      infovae plugins --kind decoders
      infovae plugins --json
      infovae plugins show mmd
    """
    if ctx.invoked_subcommand is not None:
        return
    kind = _kind(kind)
    kinds = KINDS if kind is None else (kind,)
    if as_json:
        out = listing_json(kinds)
        echo_json(out)
        if out.get("fatal"):
            ctx.exit(1)  # strict mode: the JSON says why
        return
    reg = infovae.registry()
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for k in kinds:
        table = Table(title=k, title_justify="left", show_lines=False)
        table.add_column("name", style="bold cyan", no_wrap=True)
        table.add_column("summary")
        table.add_column("provided by", style="dim")
        for info in reg.plugins(k):
            src = "built-in" if info.source.builtin else f"{info.source.distribution or info.source.plugin} {info.source.version or ''}".strip()
            summary = info.summary + (f" [dim](supports: {', '.join(info.supports)})[/dim]" if info.supports else "")
            table.add_row(info.name, summary, src)
        console.print(table)
    if reg.failures:
        table = Table(title="failed to load", title_justify="left", title_style="bold red")
        table.add_column("plugin", style="red")
        table.add_column("package")
        table.add_column("error")
        for f in reg.failures:
            table.add_row(f.name, f"{f.distribution or '?'} {f.version or ''}".strip(), f.error)
        console.print(table)


def listing_json(kinds):
    """The listing as JSON; never raises (even strict mode's failure is reported inside it)."""
    try:
        reg = infovae.registry()
    except Exception as exc:  # noqa: BLE001 - listing must always produce JSON
        return {"plugins": {k: [] for k in kinds}, "failed": [{"name": None, "distribution": None, "version": None,
                                                              "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}], "slow": [], "fatal": True}
    return {
        "plugins": {k: [i.to_json() for i in reg.plugins(k)] for k in kinds},
        "failed": [f.to_json() for f in reg.failures],
        "slow": list(reg.slow),
    }


@plugins.command("show")
@click.argument("name")
@click.option("--kind", "-k", type=click.Choice(KIND_CHOICES), help="Kind, when the name exists in several.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly_errors
def show(name, kind, as_json):
    """Describe one plugin: summary, options (type, default, help), provider.

    \b
    Examples:
      infovae plugins show mmd
      infovae plugins show pixelcnnpp --json
    """
    reg = infovae.registry()
    kind = _kind(kind)
    if kind is not None:
        infos = [reg.info(kind, name)]
    else:
        infos = reg.find(name)
        if not infos:
            import difflib

            names = sorted({i.name for i in reg.plugins()})
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise click.ClickException(f"no plugin named {name!r}.{hint} Run 'infovae plugins' to list them.")
    if as_json:
        echo_json([i.to_json() for i in infos] if len(infos) > 1 else infos[0].to_json())
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for info in infos:
        console.print(f"[bold cyan]{info.name}[/] ({SINGULAR[info.kind]})  {info.summary}")
        console.print(f"provided by: {info.source.describe()}")
        if info.supports:
            console.print(f"supports data: {', '.join(info.supports)}")
        try:
            opts = info.listed_options()
        except infovae.InfovaeError as exc:
            console.print(f"[red]options: {exc}[/red]")
            continue
        if opts is None:
            console.print("options: undeclared (the plugin registers an import string without options=; they are read from "
                          "its factory's signature when it is built)")
        elif opts:
            table = Table(title="options (key=value)", title_justify="left")
            for col in ("option", "type", "default", "help"):
                table.add_column(col)
            for o in opts:
                help_ = o.help + (f" (one of {', '.join(map(str, o.choices))})" if o.choices else "") + (f" ({o.bounds_text()})" if o.bounds_text() else "")
                table.add_row(o.name, o.type_name, repr(o.default), help_)
            console.print(table)
        else:
            console.print("options: none")
