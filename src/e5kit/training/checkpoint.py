"""Atomic, verifiable training checkpoints: ``{root}/step-00000100/{state.pt, manifest.json}``.

A checkpoint is written through ``e5kit.io.files.AtomicFolder`` (a hidden temporary folder unique to the
process, renamed into place when complete), so a run killed mid-write leaves either a complete checkpoint
or none; the next save removes the folders of writes whose process has ended. On load, a checkpoint whose
manifest is missing or whose files do not match their checksums is reported and the previous one is used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from e5kit.io.files import AtomicFolder, remove_stale_temporaries

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"
MANIFEST_FILE = "manifest.json"
PREFIX = "step-"


class CheckpointError(ValueError):
    """A checkpoint folder is incomplete or corrupt."""


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"{PREFIX}{step:08d}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(root: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` (tensors, numbers, strings, dicts) as the checkpoint of ``step``; keep the last ``keep``."""
    # An older run's checkpoint of the same step (after resuming further back) is replaced.
    with AtomicFolder(checkpoint_dir(root, step)) as staged:
        torch.save(state, staged.temporary / STATE_FILE)
        manifest = {"step": step, "files": {STATE_FILE: _sha256(staged.temporary / STATE_FILE)}}
        (staged.temporary / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    _prune(root, keep)
    return staged.path


def verify_checkpoint(folder: Path) -> int:
    """Return the step of a complete checkpoint.

    Raises:
        CheckpointError: naming what is missing or which file fails its checksum.
    """
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise CheckpointError(f"{folder}: no {MANIFEST_FILE} (the write did not finish)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        step, files = int(manifest["step"]), dict(manifest["files"])
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{manifest_path}: malformed manifest ({error})") from error
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing")
        if _sha256(path) != expected:
            raise CheckpointError(f"{path}: checksum mismatch (corrupt or partially written)")
    return step


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders in ``root``, newest step first (complete or not)."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)), key=lambda p: p.name, reverse=True)


def latest_valid_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint that verifies; each newer broken one is skipped with a warning."""
    for folder in list_checkpoints(root):
        try:
            verify_checkpoint(folder)
        except CheckpointError as error:
            logger.warning("skipping checkpoint: %s; trying the previous one", error)
            continue
        return folder
    return None


def load_checkpoint(folder: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The state saved by ``save_checkpoint`` (verified first)."""
    verify_checkpoint(folder)
    return torch.load(folder / STATE_FILE, map_location=map_location, weights_only=True)


def _prune(root: Path, keep: int) -> None:
    for folder in list_checkpoints(root)[keep:]:
        shutil.rmtree(folder)
    remove_stale_temporaries(root)
