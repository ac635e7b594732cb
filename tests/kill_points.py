"""kill -9 at a chosen point of an ``e5kit`` command, for tests that compare a killed-then-rerun stage with
an uninterrupted run.

``run_killed(argv, KillPoint(...))`` runs ``e5kit ARGV`` in a fresh Python process that SIGKILLs itself
right before or right after the ``count``-th call of a function or method (``"module:Class.method"``),
so a test can aim at the moment between two writes; no test hook lives in e5kit itself. Module
constants can be set first (``settings``), e.g. a small block size so a tiny corpus spans many blocks.
``seeded_points`` draws kill points at random from a seed, so a failure names a reproducible case.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

RUNNER = r"""
import importlib, json, os, signal, sys

plan = json.loads(os.environ["E5KIT_KILL_PLAN"])


def resolve(spec):
    module_name, _, attribute = spec.partition(":")
    owner = importlib.import_module(module_name)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    return owner, name


for spec, value in plan["settings"].items():
    setattr(*resolve(spec), value)
calls = 0


def die_at_the_count(*args, **kwargs):
    global calls
    calls += 1
    if plan["when"] == "before" and calls == plan["count"]:
        os.kill(os.getpid(), signal.SIGKILL)
    result = original(*args, **kwargs)
    if plan["when"] == "after" and calls == plan["count"]:
        os.kill(os.getpid(), signal.SIGKILL)
    return result


if plan["point"]:
    owner, name = resolve(plan["point"])
    original = getattr(owner, name)
    setattr(owner, name, die_at_the_count)
from e5kit.cli import main

sys.argv = ["e5kit", *plan["argv"]]
main()
"""


@dataclass(frozen=True)
class KillPoint:
    """Die ``when`` ("before" or "after") the ``count``-th call of ``point`` ("module:Class.method")."""

    point: str
    count: int = 1
    when: str = "after"
    settings: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.when} call {self.count} of {self.point}"


def run_e5kit(argv: list[str], settings: dict[str, Any] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``e5kit ARGV`` to the end in a fresh process, with the same module ``settings`` as a killed run."""
    return _run(argv, {"point": None, "count": 0, "when": "after", "settings": settings or {}}, timeout)


def run_killed(argv: list[str], kill: KillPoint, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``e5kit ARGV`` in a fresh process that SIGKILLs itself at ``kill``; asserts that it died there."""
    result = _run(argv, {"point": kill.point, "count": kill.count, "when": kill.when, "settings": kill.settings}, timeout)
    assert result.returncode == -9, f"not killed {kill} (exit {result.returncode}): {result.stderr[-3000:]}"
    return result


def _run(argv: list[str], plan: dict[str, Any], timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "E5KIT_KILL_PLAN": json.dumps({**plan, "argv": [str(arg) for arg in argv]}), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", RUNNER], env=env, capture_output=True, text=True, timeout=timeout)


def at_seeded_call(seed: int, point: str, when: str, calls: int, settings: dict[str, Any] | None = None) -> KillPoint:
    """Die ``when`` a call of ``point`` drawn by ``seed`` among the first ``calls`` it gets."""
    return KillPoint(point, random.Random(seed).randint(1, calls), when, settings or {})


def seeded_points(seed: int, choices: list[tuple[str, str, int]], settings: dict[str, Any] | None = None) -> KillPoint:
    """A kill point drawn by ``seed``: one of ``choices`` (point, when, calls it gets), at a random call."""
    rng = random.Random(seed)
    point, when, calls = rng.choice(choices)
    return KillPoint(point, rng.randint(1, calls), when, settings or {})
