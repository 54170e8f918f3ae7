"""Progress reporting for long loops without threading a callback through every function.

A caller installs a callback with ``report_progress_to(callback)``; long loops call
``advance(done, total)`` (``infovae.metrics`` batches do, so every metric reports the
examples it has processed in its current pass). With no callback installed ``advance``
costs one context-variable lookup.
"""
from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

Callback = Callable[[int, int], None]  # (done, total) in the loop's own units (examples, steps, pixels)
_CURRENT: contextvars.ContextVar[Optional[Callback]] = contextvars.ContextVar("infovae_progress", default=None)


@contextmanager
def report_progress_to(callback: Optional[Callback]) -> Iterator[None]:
    """Send ``advance`` calls made inside the block to ``callback(done, total)``."""
    token = _CURRENT.set(callback)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def advance(done: int, total: int) -> None:
    cb = _CURRENT.get()
    if cb is not None:
        cb(int(done), int(total))
