"""A fixed synthetic CPU load for measuring engines "under contention" (issue 17, item 4).

``background_load(processes)`` starts that many processes, each running single-threaded float32
matrix products (256 x 256, ~34 MFLOP each) in a loop until the block exits, so other work shares
the cores with a load that is the same in every run and on every engine measured inside it. The
products each process finished are counted, so a run can report how much work the load did (a
benchmark whose engine starves the load shows it as a higher count, not as a hidden advantage).

    with background_load(1) as load:
        ...measure...
    print(load.describe())
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

#: Side of the square matrices each load process multiplies: big enough to keep a core busy in
#: BLAS, small enough (256 KiB each) to stay in cache and leave memory bandwidth to the engines.
SIDE = 256


def _spin(stop, counter) -> None:
    # One BLAS thread per load process, so N processes load exactly N cores.
    os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = rng.random((SIDE, SIDE), dtype=np.float32), rng.random((SIDE, SIDE), dtype=np.float32)
    while not stop.is_set():
        for _ in range(16):
            a @ b
        with counter.get_lock():
            counter.value += 16


@dataclass
class Load:
    """A running background load: how many processes, since when, and how many products they finished."""

    processes: int
    started: float = field(default_factory=time.perf_counter)
    counter: object = None
    seconds: float = 0.0

    @property
    def products(self) -> int:
        return int(self.counter.value) if self.counter is not None else 0

    def describe(self) -> str:
        if not self.processes:
            return "no background load"
        rate = self.products / self.seconds if self.seconds else 0.0
        return (f"background load: {self.processes} single-threaded process(es) multiplying {SIDE}x{SIDE} float32 matrices "
                f"({rate:.0f} products/s over {self.seconds:.0f} s)")


@contextmanager
def background_load(processes: int) -> Iterator[Load]:
    """Run ``processes`` load processes (0: none) for the duration of the block."""
    load = Load(processes)
    if not processes:
        yield load
        return
    context = multiprocessing.get_context("spawn")  # no copy of the caller's threads or model
    stop, load.counter = context.Event(), context.Value("q", 0)
    workers = [context.Process(target=_spin, args=(stop, load.counter), daemon=True) for _ in range(processes)]
    for worker in workers:
        worker.start()
    time.sleep(1.0)  # let them import numpy and reach the loop before anything is timed
    with load.counter.get_lock():
        load.counter.value = 0
    load.started = time.perf_counter()
    try:
        yield load
    finally:
        load.seconds = time.perf_counter() - load.started
        stop.set()
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
