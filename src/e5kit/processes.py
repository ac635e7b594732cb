"""Child processes that end with the process that started them, and the one torchrun process group.

A parent killed with kill -9 runs no cleanup, so the workers it started would go on as orphans holding
memory, some blocked forever on a queue nobody reads. Every child e5kit starts (curation's shard
workers, the quickstart's torchrun) runs :func:`die_with_parent` first: on Linux the kernel then sends
it a signal the moment its parent ends (``prctl(PR_SET_PDEATHSIG)``, which also holds after ``exec``);
elsewhere a daemon thread polls the parent's id and ends the process when the parent has gone.

Under torchrun every stage that works across ranks (training, embedding into a store) joins the
launcher's process group through :func:`join_process_group`, once per process.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import sys
import threading
import time

#: ``PR_SET_PDEATHSIG`` from <linux/prctl.h>.
PR_SET_PDEATHSIG = 1
#: Seconds between two looks at the parent's id where prctl is not available.
POLL_SECONDS = 1.0


def die_with_parent(parent_pid: int, signal_number: int = signal.SIGKILL) -> None:
    """Have this process receive ``signal_number`` when its parent, ``parent_pid``, ends.

    Call it first in the child (a pool initializer, a ``subprocess`` ``preexec_fn``); a parent that
    ended before the call ends the child at once. Off Linux the watch is a thread, so it does not
    survive an ``exec``.

    Raises:
        OSError: Linux refused the request (``prctl`` failed), with its errno.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal_number, 0, 0, 0) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(error)}")
    else:
        threading.Thread(target=_watch_parent, args=(parent_pid, signal_number), daemon=True, name="e5kit-parent-watch").start()
    if os.getppid() != parent_pid:  # the parent ended before the request took effect
        os.kill(os.getpid(), signal_number)


def _watch_parent(parent_pid: int, signal_number: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(POLL_SECONDS)
    os.kill(os.getpid(), signal_number)


def join_process_group(backend: str) -> None:
    """Join the process group torchrun's launcher set up (``backend``: "gloo" or "nccl"), once per process.

    A second call, from a later stage in the same process, keeps the group already joined. The group is
    left only when the process exits: destroying torch's default group resets its group counter, so
    joining again on torchrun's store reads the first group's stale rank addresses, and gloo's connect
    then fails with "Connection refused" whenever a rank re-joins before its peer has published anew.

    Raises:
        ValueError: not launched by torchrun (no ``RANK`` in the environment).
    """
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if "RANK" not in os.environ:
        raise ValueError("not launched by torchrun (no RANK in the environment); run under `torchrun --nproc_per_node N`")
    dist.init_process_group(backend=backend)
    atexit.register(dist.destroy_process_group)
