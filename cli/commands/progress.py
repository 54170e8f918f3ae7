"""Progress displays shared by the commands: rich bars on a terminal, nothing in pipes and logs."""
from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console


def stderr_console() -> Console:
    """The console for progress and per-epoch lines: on a terminal as usual; otherwise lines are
    never wrapped (a log file gets one line per record, whatever its length)."""
    probe = Console(stderr=True)
    if probe.is_terminal:
        return probe
    return Console(stderr=True, soft_wrap=True, width=1000)


@contextmanager
def task_progress(description: str, enabled: bool = True):
    """Yields a callback(done, total) for ``infovae.progress.report_progress_to``: a rich bar on a
    terminal (samplers report pixels or chain steps), ``None`` elsewhere (pipes and logs stay clean)."""
    console = stderr_console()
    if not enabled or not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as prog:
        task = prog.add_task(description, total=None)
        yield lambda done, total: prog.update(task, completed=done, total=total)


@contextmanager
def metric_progress(enabled: bool = True):
    """Yields (on_metric(name), on_progress(done, total)) for ``infovae.evaluation.evaluate_run``.

    On a terminal a bar per metric shows the examples done in its current pass; elsewhere
    each metric's start is one plain line on stderr.
    """
    console = stderr_console()
    if not enabled:
        yield None, None
        return
    if not console.is_terminal:
        yield (lambda name: console.print(f"evaluating {name}", highlight=False)), None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as prog:
        state = {"task": None}

        def on_metric(name):
            if state["task"] is not None:
                prog.update(state["task"], visible=False)
            state["task"] = prog.add_task(name, total=None)

        def on_progress(done, total):
            if state["task"] is not None:
                prog.update(state["task"], completed=done, total=total)

        yield on_metric, on_progress
