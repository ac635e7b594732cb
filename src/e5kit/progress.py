"""Progress bars: one rule for every stage.

A bar is drawn on standard error only when a person can watch it there (a terminal, or a notebook)
and ``-q`` was not given, and only once its work has taken :data:`DELAY_S` seconds, so quick calls
(a search, a small request) and logs, pipes and CI output stay clean.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

#: Seconds of work before a bar appears.
DELAY_S = 2.0

_quiet = False
#: The count this process adds to (see :func:`counting`); None outside a counted run.
_count = None


def set_quiet(quiet: bool) -> None:
    """Turn every bar off (the CLI's ``-q``) or back on."""
    global _quiet
    _quiet = quiet


def _watched() -> bool:
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def progress_shown(show: bool | None = True) -> bool:
    """Whether a bar that its caller wants (``show`` not False; None is the callers' "default") is drawn."""
    return show is not False and not _quiet and _watched()


def progress_bar(iterable=None, *, show: bool | None = True, **options) -> tqdm:
    """A tqdm bar (``desc``, ``unit``, ``total``, ... as tqdm takes them) drawn by the rule of :func:`progress_shown`."""
    return tqdm(iterable, disable=not progress_shown(show), delay=DELAY_S, **options)


def set_count(count) -> None:
    """Make ``count`` (from :func:`counting`) the one :func:`add` adds to: a worker process's initializer calls it."""
    global _count
    _count = count


def add(amount: int) -> None:
    """Add to the count of the running :func:`counting` bar, from this process or a worker it started;
    nothing outside one. Call it every few thousand items: each call takes a lock shared between processes."""
    if _count is not None and amount:
        with _count.get_lock():
            _count.value += amount


@contextmanager
def counting(*, show: bool | None = True, **options) -> Iterator[object]:
    """A bar over a count that this process and its worker processes add to with :func:`add` (workers
    get the yielded shared value and pass it to :func:`set_count`); the bar follows it twice a second."""
    count = multiprocessing.Value("q", 0)
    set_count(count)
    progress = progress_bar(show=show, **options)
    stopped = threading.Event()

    def follow() -> None:
        while not stopped.wait(0.5):
            progress.update(count.value - progress.n)

    follower = threading.Thread(target=follow, daemon=True)
    if not progress.disable:
        follower.start()
    try:
        yield count
    finally:
        stopped.set()
        if follower.is_alive():
            follower.join()
        progress.update(count.value - progress.n)
        progress.close()
        set_count(None)
