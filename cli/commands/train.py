"""``infovae train``: compose plugins, validate everything, train, write a run."""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import click

from infovae import PluginOptionError
from infovae.runs import TrainerConfig

# The trainer's defaults come from TrainerConfig alone (the Python API and the CLI agree).
TC = TrainerConfig()
from infovae.options import parse_assignments

from .common import echo_json, friendly_errors

DEFAULTS = {
    "dataset": "digits",
    "encoder": "mlp",
    "decoder": "bernoulli-mlp",
    "divergence": ("mmd=100",),
    "latent_dim": 8,
}
RESERVED_TARGETS = ("dataset", "encoder", "decoder")


def parse_divergence(item: str) -> Tuple[str, float]:
    name, sep, weight = item.partition("=")
    name = name.strip()
    if not name:
        raise PluginOptionError(f"--divergence {item!r}: expected NAME or NAME=WEIGHT")
    if not sep:
        return name, 1.0
    try:
        w = float(weight)
    except ValueError:
        raise PluginOptionError(f"--divergence {item!r}: the weight {weight!r} is not a number") from None
    return name, w


def split_options(items: List[str], divergence_names: List[str], logger_names: Tuple[str, ...] = ()) -> Dict[str, Dict[str, str]]:
    """'-o TARGET.KEY=VALUE' items -> {target: {key: value}}; targets: dataset, encoder, decoder, a divergence or a logger."""
    from infovae.options import split_targeted

    return split_targeted(items, list(RESERVED_TARGETS) + list(divergence_names) + list(logger_names), "train",
                          "-o dataset.path=~/data, -o mmd.kernel=imq",
                          add_hint="If {target} is a divergence or a logger, add --divergence {target} or --logger {target} first.")


def load_config(path: Path) -> Dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise click.BadParameter(f"config file {path} does not exist", param_hint="--config") from None
    except OSError as exc:
        from infovae.io import os_reason

        raise click.BadParameter(f"cannot read config file {path}: {os_reason(exc)}", param_hint="--config") from None
    try:
        cfg = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise click.BadParameter(f"config file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8", param_hint="--config") from None
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise click.BadParameter(f"config file {path} is not valid TOML: {exc}", param_hint="--config") from None
    check_config_types(cfg, path)
    return cfg


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool))


# key -> (check, what it must be); values are checked before any is used.
CONFIG_TYPES = {
    "dataset": (lambda v: isinstance(v, str), "a plugin name (string)"),
    "encoder": (lambda v: isinstance(v, str), "a plugin name (string)"),
    "decoder": (lambda v: isinstance(v, str), "a plugin name (string)"),
    "divergence": (
        lambda v: isinstance(v, str)
        or (isinstance(v, list) and all(isinstance(x, str) for x in v))
        or (isinstance(v, dict) and all(_is_number(x) for x in v.values())),
        'a string "mmd=100", a list of them, or a table {mmd = 100}',
    ),
    "latent_dim": (_is_int, "an integer"),
    "batch_size": (_is_int, "an integer"),
    "epochs": (_is_int, "an integer"),
    "steps": (_is_int, "an integer"),
    "lr": (_is_number, "a number"),
    "weight_decay": (_is_number, "a number"),
    "seed": (_is_int, "an integer"),
    "device": (lambda v: isinstance(v, str), "a string (auto, cpu, cuda, cuda:N)"),
    "amp": (lambda v: v in ("none", "bf16"), '"none" or "bf16"'),
    "compile": (lambda v: isinstance(v, bool), "true or false (a TOML boolean, not a string)"),
    "log_every": (_is_int, "an integer"),
    "sample_every": (_is_int, "an integer"),
    "checkpoint_every": (_is_int, "an integer"),
    "out": (lambda v: isinstance(v, str) and v != "", "a directory path (string)"),
    "track": (lambda v: isinstance(v, str), "a comma-separated string of metric names"),
    "options": (
        lambda v: isinstance(v, dict) and all(
            isinstance(t, dict) and all(_is_scalar(x) or (isinstance(x, list) and all(_is_scalar(y) for y in x)) for x in t.values())
            for t in v.values()
        ),
        "tables [options.TARGET] of key = value (numbers, strings, booleans or lists of them)",
    ),
}


def check_config_types(cfg: Dict[str, Any], path: Path) -> None:
    """Unknown keys and every value's type, each a one-line error naming the key."""
    for key, value in cfg.items():
        if key not in CONFIG_TYPES:
            continue  # unknown keys are reported by apply_config
        ok, what = CONFIG_TYPES[key]
        if not ok(value):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise click.BadParameter(f"{key} in {path} must be {what}, got {shown}", param_hint="--config")


def config_options(cfg: Dict[str, Any]) -> List[str]:
    """The [options] table of a config file as '-o' strings."""
    items = []
    for target, table in (cfg.get("options") or {}).items():
        if not isinstance(table, dict):
            raise PluginOptionError(f"config: [options.{target}] must be a table of key = value")
        for k, v in table.items():
            if isinstance(v, (list, tuple)):
                v = ",".join(map(str, v))
            elif isinstance(v, bool):
                v = "true" if v else "false"
            items.append(f"{target}.{k}={v}")
    return items


# Config-file keys are the command's own option names (one place: the click options below),
# minus those that make no sense in a file, plus the [options] table.
CONFIG_EXCLUDED = {"config_path", "resume", "overwrite", "as_json", "quiet", "options", "nproc_per_node"}
CONFIG_ALIASES = {"compile": "compile_"}  # file key -> click parameter name


def config_keys(command: click.Command) -> set:
    """Every key a --config file may hold."""
    inverse = {v: k for k, v in CONFIG_ALIASES.items()}
    return {inverse.get(p.name, p.name) for p in command.params if p.name not in CONFIG_EXCLUDED} | {"options"}


def apply_config(ctx: click.Context, param: click.Parameter, path):
    """Eager --config callback: the file becomes click's ``default_map`` (so click type-checks and
    converts its values like command-line ones, and any flag given overrides it); the
    ``[options]`` table is kept in ``ctx.meta`` and merged before the command line's ``-o``."""
    if path is None:
        return None
    cfg = load_config(path)
    known = config_keys(ctx.command)
    unknown = set(cfg) - known
    if unknown:
        raise click.BadParameter(f"unknown key(s) {', '.join(sorted(unknown))} in {path}; known: {', '.join(sorted(known))}", param_hint="--config")
    defaults = {}
    for key, value in cfg.items():
        if key == "options":
            continue
        if key == "divergence":
            value = [f"{k}={v}" for k, v in value.items()] if isinstance(value, dict) else [value] if isinstance(value, str) else list(value)
        defaults[CONFIG_ALIASES.get(key, key)] = value
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    ctx.meta["infovae.config_options"] = config_options(cfg)
    return path


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False, path_type=Path), is_eager=True, expose_value=True,
              callback=apply_config, help="TOML file with any of these options; the command line overrides it.")
@click.option("--dataset", "-d", default=DEFAULTS["dataset"], show_default=True, help="Data set plugin.")
@click.option("--encoder", "-e", default=DEFAULTS["encoder"], show_default=True, help="Encoder plugin.")
@click.option("--decoder", "-p", default=DEFAULTS["decoder"], show_default=True, help="Decoder plugin.")
@click.option("--divergence", "-r", multiple=True, metavar="NAME[=WEIGHT]", help="Regularizer and its weight (repeatable). Default: mmd=100. Use 'none' for the plain autoencoder L_AE.")
@click.option("--option", "-o", "options", multiple=True, metavar="TARGET.KEY=VALUE", help="Plugin option: TARGET is dataset, encoder, decoder, a divergence or a logger name (repeatable).")
@click.option("--logger", "-l", "loggers", multiple=True, metavar="NAME", help="Experiment tracker besides metrics.jsonl: tensorboard, mlflow (repeatable; see 'infovae plugins --kind loggers').")
@click.option("--latent-dim", "-z", type=int, default=DEFAULTS["latent_dim"], show_default=True, help="Dimension of z.")
@click.option("--batch-size", "-b", type=int, default=TC.batch_size, show_default=True)
@click.option("--epochs", type=int, default=TC.epochs, show_default=True)
@click.option("--steps", type=int, default=None, help="Total optimiser steps (overrides --epochs).")
@click.option("--lr", type=float, default=TC.lr, show_default=True, help="Adam learning rate.")
@click.option("--weight-decay", type=float, default=TC.weight_decay, show_default=True)
@click.option("--seed", type=int, default=TC.seed, show_default=True)
@click.option("--device", default=TC.device, show_default=True, help="auto (CUDA when present), cpu, cuda, cuda:N.")
@click.option("--amp", type=click.Choice(["none", "bf16"]), default=TC.amp, show_default=True, help="Mixed precision (divergences stay float32).")
@click.option("--compile/--no-compile", "compile_", default=TC.compile, show_default=True, help="torch.compile the loss.")
@click.option("--log-every", type=int, default=TC.log_every, show_default=True, help="Steps between metric lines.")
@click.option("--sample-every", type=int, default=TC.sample_every, show_default=True, help="Epochs between sample grids (0: at the end only).")
@click.option("--checkpoint-every", type=int, default=TC.checkpoint_every, show_default=True, help="Steps between checkpoints (0: at an epoch end once a minute has passed; Ctrl-C and the end always checkpoint).")
@click.option("--flush-denormal/--no-flush-denormal", "flush_denormal", default=TC.flush_denormal, show_default=True,
              help="On the CPU, treat denormal floats as 0 while training (faster once Adam's moments decay; recorded in spec.json).")
@click.option("--track", default=TC.track, help="Metrics logged each epoch on validation data, e.g. mutual-information,nll (the paper's Figure 1 curves).")
@click.option("--out", "-O", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/default"), show_default=True, help="Run directory to create.")
@click.option("--overwrite", is_flag=True, help="Replace a run already in --out.")
@click.option("--resume", type=click.Path(file_okay=False, path_type=Path), help="Continue the run in this directory (--steps/--epochs may extend it).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.option("--nproc-per-node", type=click.IntRange(1), default=None, help="Start N processes on this machine through torchrun (torch.distributed.run); --batch-size stays the global batch.")
@click.pass_context
@friendly_errors
def train(ctx, config_path, dataset, encoder, decoder, divergence, options, loggers, latent_dim, batch_size, epochs, steps, lr,
          weight_decay, seed, device, amp, compile_, log_every, sample_every, checkpoint_every, track, out, overwrite, resume,
          as_json, quiet, nproc_per_node, flush_denormal):
    """Train an InfoVAE composed of plugins and write a resumable run.

    \b
    The loss is  -E_q[log p(x|z)] + sum_k weight_k * D_k(q(z) || p(z)).
    kl=1 gives the ELBO; mmd, stein, adversarial are InfoVAE's marginal divergences.

    \b
    Examples:
      infovae train                                   # digits, MMD-InfoVAE, ~1 minute on a CPU
      infovae train -r kl=1 --out runs/elbo           # the ELBO VAE
      infovae train -r none --out runs/ae             # plain probabilistic autoencoder L_AE
      infovae train -r mmd=100 -o mmd.kernel=imq -o mmd.bandwidth=median -z 5 --out runs/mmd
      infovae train -d binarized-mnist -o dataset.path=data/binarized_mnist.npz -p pixelcnn -e conv
      infovae train --config experiment.toml --epochs 5
      infovae train --logger tensorboard --logger mlflow -o tensorboard.dir=tb/mmd
      infovae train --resume runs/mmd --epochs 200
      infovae train --nproc-per-node 2 --device cpu    # 2 processes (gloo), same model as 1
      torchrun --nproc-per-node 8 --no-python infovae train --device cuda -b 512
    """
    if nproc_per_node is not None and nproc_per_node > 1:
        return _launch(ctx, nproc_per_node, batch_size=batch_size, device=device)

    if resume is not None:
        changed = [p for p in ctx.params if p not in ("resume", "steps", "epochs", "as_json", "quiet", "nproc_per_node")
                   and ctx.get_parameter_source(p) not in (click.core.ParameterSource.DEFAULT, None)]
        if changed:
            raise click.UsageError(f"--resume continues a run as it was specified; only --steps and --epochs may change (got {', '.join('--' + c.replace('_', '-') for c in changed)})")
        return _resume(ctx, resume, steps, epochs, as_json, quiet)

    div_items = list(divergence) or list(DEFAULTS["divergence"])
    if [d.strip() for d in div_items] == ["none"]:
        divs: List[Tuple[str, float]] = []
    else:
        divs = [parse_divergence(d) for d in div_items]
    logger_names = tuple(loggers)
    opts = split_options(ctx.meta.get("infovae.config_options", []) + list(options), [n for n, _ in divs], logger_names)

    trainer_cfg = TrainerConfig(
        batch_size=batch_size, epochs=epochs, steps=steps, lr=float(lr),
        weight_decay=float(weight_decay), seed=seed, device=device, amp=amp, compile=compile_,
        log_every=log_every, sample_every=sample_every, checkpoint_every=checkpoint_every, track=track,
        flush_denormal=bool(flush_denormal),
    )
    from infovae.runs import check_trainer_config

    try:
        check_trainer_config(trainer_cfg)
    except ValueError as exc:
        raise PluginOptionError(f"{exc}; fix the option or the config file") from None
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
        raise PluginOptionError(f"latent dimension must be at least 1 (an integer), got {latent_dim!r}")
    from infovae.api import check_out_dir, start_training
    from infovae.build import make_run_spec
    from infovae.loggers import resolve_loggers, write_loggers_file
    import infovae

    logger_choices = resolve_loggers(infovae.registry(), logger_names, opts)
    check_out_dir(out, overwrite)
    spec, ds = make_run_spec(
        dataset=dataset, dataset_options=opts.get("dataset", {}), latent_dim=int(latent_dim),
        encoder=encoder, encoder_options=opts.get("encoder", {}), decoder=decoder, decoder_options=opts.get("decoder", {}),
        divergences=[(n, w, opts.get(n, {})) for n, w in divs], trainer=trainer_cfg, reg=infovae.registry(),
    )
    trainer = start_training(out, spec, ds, overwrite=overwrite)
    if logger_choices and trainer._is_writer():
        write_loggers_file(out, logger_choices)
    trainer.logger_choices = logger_choices
    _run(trainer, as_json, quiet)


def _strip_nproc(argv: List[str]) -> List[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc-per-node":
            skip = True
        elif not a.startswith("--nproc-per-node="):
            out.append(a)
    return out


def _launch(ctx, nproc: int, batch_size: int, device: str) -> None:
    """Re-run this command as ``nproc`` torchrun workers (torch's elastic launcher, standalone rendezvous)."""
    import torch

    from infovae.distributed import check_batch, env_world_size

    if env_world_size() > 1:
        raise click.UsageError("--nproc-per-node starts torchrun; this process already runs under torchrun, so drop it")
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if have < nproc:
            raise click.UsageError(f"--nproc-per-node {nproc} with --device {device} needs {nproc} GPUs; this machine has {have}. Use --nproc-per-node {have or 1} or --device cpu")
    check_batch(int(batch_size), nproc)  # --config values are already in batch_size (click's default_map)
    argv = _strip_nproc(ctx.find_root().meta.get("infovae.argv", []))
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(["--standalone", "--nproc-per-node", str(nproc), "--module", "infovae.cli.main", *argv])
    except ChildFailedError as exc:
        codes = {int(f.exitcode) for f in exc.failures.values()}
        if codes <= {130, 143}:
            sys.exit(max(codes))
        raise click.ClickException(f"a training process failed ({exc.get_first_failure()[1].exitcode}); see its error above") from None


def _resume(ctx, run_dir, steps, epochs, as_json, quiet):
    from infovae.api import resume_training

    epochs_given = ctx.get_parameter_source("epochs") != click.core.ParameterSource.DEFAULT
    trainer = resume_training(run_dir, steps=steps, epochs=epochs if epochs_given else None)  # validates before writing
    from infovae.loggers import read_loggers_file

    trainer.logger_choices = read_loggers_file(run_dir)
    if trainer.step >= trainer.total_steps:
        raise click.ClickException(f"{run_dir} already finished its {trainer.total_steps} steps; give a larger --steps or --epochs to continue it")
    _run(trainer, as_json, quiet)


def _describe(rec: Dict[str, Any]) -> str:
    parts = [f"{k.split('/', 1)[1]}={v:.4g}" for k, v in rec.items() if k.startswith("train/")]
    parts += [f"valid {k.split('/', 1)[1]}={v:.4g}" for k, v in rec.items() if k.startswith("valid/") and k.endswith("loss")]
    if "examples_per_second" in rec:
        parts.append(f"{rec['examples_per_second']:.0f} ex/s")
    return "  ".join(parts)


def _run(trainer, as_json: bool, quiet: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from .progress import stderr_console

    err = stderr_console()
    quiet = quiet or not trainer._is_writer()  # under torchrun only rank 0 reports
    as_json = as_json and trainer._is_writer()
    interactive = err.is_terminal and not quiet
    spe = trainer.steps_per_epoch

    def on_log(rec):
        if not quiet and not interactive and rec["step"] % spe == 0:
            err.print(f"epoch {rec['step'] // spe:>4}  step {rec['step']:>6}  {_describe(rec)}", highlight=False)

    trainer.on_log = on_log
    if not quiet:
        err.print(f"[dim]run {trainer.run_dir}: {trainer.total_steps} steps on {trainer.device}, starting at step {trainer.step}[/dim]")
    if interactive:
        with Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.description}"), console=err) as prog:
            task = prog.add_task("", total=trainer.total_steps, completed=trainer.step)
            summary = trainer.fit(progress=lambda s, tot, rec: prog.update(task, completed=s, description=_describe(rec)))
    else:
        summary = trainer.fit()
    if summary.status == "interrupted":
        # Stopped by a signal and checkpointed: further signals (torchrun's agent forwards one
        # to the ranks still finishing) must not turn the clean exit into a kill.
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    trainer.ctx.barrier()  # every rank is done before any exits
    trainer.close()
    result = {
        "run": summary.run_dir, "status": summary.status, "step": summary.step, "total_steps": summary.total_steps,
        "seconds": round(summary.seconds, 3), "examples": summary.examples,
        # Whole run, training loop (steps, batches, logging; not validation, grids, checkpoints):
        "loop_seconds": round(summary.loop_seconds, 3), "examples_per_second": summary.examples_per_second,
        # Whole run, everything fit() did; then the last logging window alone:
        "fit_examples_per_second": summary.fit_examples_per_second,
        "last_window_examples_per_second": summary.window_examples_per_second,
        "overhead_fraction": summary.overhead_fraction, "flush_denormal": summary.flush_denormal,
        **{k: v for k, v in summary.last.items() if k.startswith(("train/", "valid/"))},
    }
    result = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in result.items()}
    if as_json:
        echo_json(result)
    elif not quiet:
        click.echo(f"{summary.status}: {summary.step}/{summary.total_steps} steps in {summary.seconds:.1f} s -> {summary.run_dir}")
        click.echo(f"throughput: {summary.examples_per_second:.0f} examples/s over the training loop ({summary.loop_seconds:.1f} s), "
                   f"{summary.fit_examples_per_second:.0f} over the whole fit, {summary.window_examples_per_second:.0f} in the last "
                   f"logging window; {100 * summary.overhead_fraction:.1f}% of the fit outside the model's forward/backward/step")
        if summary.status == "interrupted":
            click.echo(f"resume with: infovae train --resume {summary.run_dir}")
    if summary.status == "interrupted":
        import signal

        # 128 + the signal, as a shell reports a process it killed: SIGINT 130, SIGTERM 143, SIGHUP 129.
        sys.exit(128 + int(trainer.stop_signal or trainer.interrupt.signum or signal.SIGINT))
