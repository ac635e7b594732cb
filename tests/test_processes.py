"""e5kit.processes: a child started with die_with_parent ends when its parent is killed with kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

#: Starts `sleep` through subprocess with die_with_parent as its preexec_fn (as the quickstart starts
#: torchrun), prints the child's pid, and waits.
PARENT = """
import functools, os, signal, subprocess, sys, time
from e5kit.processes import die_with_parent

child = subprocess.Popen(["sleep", "600"], preexec_fn=functools.partial(die_with_parent, os.getpid(), signal.SIGTERM))
print(child.pid, flush=True)
time.sleep(600)
"""


def ended(process: psutil.Process) -> bool:
    """Gone, or a zombie waiting for init to reap it."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_child_ends_when_its_parent_is_killed():
    # Given a parent whose child (an exec'd program) asked to die with it
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child = psutil.Process(int(parent.stdout.readline()))
    try:
        # When the parent is killed with SIGKILL
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        # Then the child ends too
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not ended(child):
            time.sleep(0.05)
        assert ended(child)
    finally:
        if not ended(child):
            child.kill()
