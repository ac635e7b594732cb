"""Runs of the stages that embed in-memory texts into an EmbeddingStore (``e5kit.retrieval.engines.embed_texts``)
for their tests: stopped midway as kill -9 would, and the e5kit command run by 2 gloo processes under
torchrun or with a local Ray of 2 actors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from e5kit.cli import app
from e5kit.retrieval import engines


class Killed(Exception):
    """Stands for kill -9 while a block is being embedded."""


def kill_embedding_at_block(monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    """Make reading ``block`` of any in-memory text list raise ``Killed`` (until ``monkeypatch`` is undone):
    the blocks before it are on disk, it and the ones after are not."""
    slice_block = engines.slice_block

    def dies(texts, block_rows, number):
        if number == block:
            raise Killed
        return slice_block(texts, block_rows, number)

    monkeypatch.setattr(engines, "slice_block", dies)


def torchrun_cli(args: list[str]) -> str:
    """``e5kit ARGS --engine torchrun`` in 2 gloo processes (one thread each); returns their stdout (both
    ranks'), fails the test with their output."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "e5kit", *args, "--engine", "torchrun"]
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def ray_cli(args: list[str]) -> None:
    """``e5kit ARGS --engine ray --workers 2`` on a local Ray, shut down afterwards (skips without Ray)."""
    ray = pytest.importorskip("ray")
    try:
        result = CliRunner().invoke(app, [*args, "--engine", "ray", "--workers", "2"])
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output


def check_engines_write_the_local_file(argv: list[str], folder) -> None:
    """``e5kit ARGV --out F`` in one process, under torchrun (2 gloo ranks) and on a local Ray of 2 actors:
    the three files are the same bytes and the torchrun launch prints its summary ("wrote ...") once."""
    result = CliRunner().invoke(app, [*argv, "--out", str(folder / "local.jsonl")])
    assert result.exit_code == 0, result.output
    printed = torchrun_cli([*argv, "--out", str(folder / "torchrun.jsonl")])
    assert (folder / "torchrun.jsonl").read_bytes() == (folder / "local.jsonl").read_bytes()
    assert printed.count("wrote ") == 1
    ray_cli([*argv, "--out", str(folder / "ray.jsonl")])
    assert (folder / "ray.jsonl").read_bytes() == (folder / "local.jsonl").read_bytes()
