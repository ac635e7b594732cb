"""The stage contract: a validated config, its inputs and outputs, a fingerprint, ``run(config) -> report``.

Every stage that writes a folder (curate, holdout, the consistency filter, pre-training; the
quickstart's own steps) finishes by writing one marker in one format, ``<output_dir>/report.json``::

    {"stage": "curate", "fingerprint": "3f2a...", "seconds": 81.2, "e5kit": "0.4.0",
     "outputs": {"pairs": ".../pairs"}, ...the stage's own counts...}

A stage whose output is one file (mining's and teacher scoring's ``OUT``) writes the same marker beside
it, ``OUT.stats.json``; evaluation, whose results folder many runs share, ``RESULTS_DIR/stages/<run>.json``
(:attr:`Stage.marker`). The marker is written last and atomically, so its presence means the stage
finished; its ``fingerprint`` (the stage's settings and the size and time of every input file) says what it finished on. A rerun
whose fingerprint matches is skipped; any other rerun removes the marker first, so a kill mid-way
never leaves a marker beside half-written outputs. A stage that resumes its own partial work (curation's
finished shards, the embedding stores of the filter, mining, teacher scoring, the index and evaluation,
training checkpoints) finds it in the folder; it is told whether the run it finds was started under
the same fingerprint (:meth:`Stage.start`), so work left under other settings is never taken up; in a
folder the caller owns (``owns_folder``: the quickstart's and ``e5kit ablate``'s step folders) partial
work left under other settings is removed first, so it never mixes in.

The quickstart and ``e5kit ablate`` chain :class:`Stage` objects with :func:`run_stage`, evaluation and the
index included; the few steps of their own that are no library stage (the quickstart's built-in corpus, a
consistency filter re-cut from another's stored ranks) use the same marker through :func:`run_step`.
Reference: tevatron's and datatrove's stages that talk through files; contrastors' one validated config
per stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from e5kit.io.files import write_text_atomic
from e5kit.version import package_version

REPORT_FILE = "report.json"
#: The fingerprint an unfinished stage was started with: its partial work is kept only under the same.
STARTED_FILE = "stage-started.txt"
#: The fingerprint of the chain before a stage command launched by a chain (the quickstart's torchrun
#: pre-training): the command's stage then has the chain's fingerprint and marker (``run_stage``'s upstream).
UPSTREAM_ENV = "E5KIT_STAGE_UPSTREAM"
#: Keys of the marker that every stage's report carries besides its own counts.
ENVELOPE = ("stage", "fingerprint", "seconds", "e5kit", "outputs")

ConfigT = TypeVar("ConfigT", bound=BaseModel)


def settings_fingerprint(settings: Any) -> str:
    """A short stable hash of settings (JSON with sorted keys; paths and other objects as strings)."""
    return hashlib.blake2b(json.dumps(settings, sort_keys=True, default=str).encode(), digest_size=6).hexdigest()


def local_model(name: str | Path) -> list[Path]:
    """``[Path(name)]`` when the model is a local folder, else ``[]``: a stage's model is one of its
    inputs (its files' identity is fingerprinted) only where it is on disk; a Hub id or bundled name
    is not a file the stage can check."""
    path = Path(name)
    return [path] if path.exists() else []


def file_identity(paths: Iterable[str | Path]) -> list[list[Any]]:
    """``[path, bytes, mtime_ns]`` of every file named or under a folder named, sorted; a missing path
    is listed with ``None``s, so a fingerprint changes when an input is added, rewritten or removed."""
    identity = []
    for path in map(Path, paths):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            stat = file.stat() if file.exists() else None
            identity.append([str(file), stat.st_size if stat else None, stat.st_mtime_ns if stat else None])
    return identity


def read_report(folder: str | Path) -> dict[str, Any] | None:
    """The marker of a finished stage in ``folder``, or None when it has not finished there."""
    return read_marker(Path(folder) / REPORT_FILE)


def read_marker(path: str | Path) -> dict[str, Any] | None:
    """The marker file ``path`` of a finished stage, or None when it is absent or not a marker."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:  # not ours (markers are written atomically): treated as unfinished
        return None
    return marker if isinstance(marker, dict) else None


def started_file(marker: Path) -> Path:
    """Where an unfinished run's fingerprint is kept: ``stage-started.txt`` beside a ``report.json``
    marker, ``OUT.stats.json.started`` beside a file stage's."""
    return marker.parent / STARTED_FILE if marker.name == REPORT_FILE else marker.with_name(f"{marker.name}.started")


class Stage(ABC, Generic[ConfigT]):
    """One stage: ``name``, its pydantic ``config_class``, inputs, outputs, a fingerprint, and the work.

    Subclasses set ``name`` and ``config_class``, and implement :meth:`inputs`, :meth:`outputs` and
    :meth:`execute`; :func:`run_stage` runs them under the one marker rule.

    Attributes:
        config: The validated settings (``config_class``), with an ``output_dir``.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[BaseModel]]
    #: Settings that change how a stage runs but never what it writes (workers, engine): not fingerprinted.
    runtime_fields: ClassVar[frozenset[str]] = frozenset()
    #: Whether the stage finds and continues its own partial work after a kill.
    resumable: ClassVar[bool] = False

    def __init__(self, config: ConfigT) -> None:
        self.config = config
        #: Set by :meth:`start`: the partial work found was started under this run's fingerprint.
        self.resuming = False

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def marker(self) -> Path:
        """The stage's marker file: ``output_dir/report.json`` (a one-file stage: ``OUT.stats.json``)."""
        return self.output_dir / REPORT_FILE

    def start(self, resuming: bool, discard: bool) -> None:
        """Called by :func:`run_stage` on every process before :meth:`execute`: ``resuming`` says whether
        an unfinished run of the same fingerprint left the partial work there; ``discard`` (rank 0, not
        resuming) asks to remove partial work a resumable stage would otherwise take up (see
        :meth:`discard_partial`)."""
        self.resuming = resuming
        if discard:
            self.discard_partial()

    def discard_partial(self) -> None:
        """Remove partial work left under other settings that :meth:`execute` would resume from. Stages
        whose partial work is named by what made it (embedding stores) need not: the default does nothing."""

    @abstractmethod
    def inputs(self) -> list[Path]:
        """Files or folders the stage reads (their sizes and times enter the fingerprint)."""

    @abstractmethod
    def outputs(self) -> dict[str, Path]:
        """Named outputs a later stage reads (e.g. ``{"pairs": output_dir / "pairs"}``)."""

    @abstractmethod
    def execute(self, log: Callable[[str], None]) -> dict[str, Any]:
        """Do the work into :attr:`output_dir`; returns the report's counts (JSON-serialisable)."""

    def fingerprint(self, upstream: Any = "") -> str:
        """Hash of the settings that shape the outputs, the inputs' identity and ``upstream`` (a chain's
        fingerprint of the stages before)."""
        settings = self.config.model_dump(mode="json", exclude=set(self.runtime_fields))
        return settings_fingerprint([self.name, settings, file_identity(self.inputs()), upstream])



class OneFileStage(Stage[ConfigT]):
    """A stage whose output is one file (mining, teacher scoring): it writes in the file's folder, and its
    marker is ``OUT.stats.json`` beside the file.

    Subclasses implement :attr:`output_file` besides what a :class:`Stage` needs.
    """

    @property
    @abstractmethod
    def output_file(self) -> Path:
        """The one file the stage writes (OUT)."""

    @property
    def output_dir(self) -> Path:
        return self.output_file.parent

    @property
    def marker(self) -> Path:
        return Path(f"{self.output_file}.stats.json")


def write_marker(marker: Path, name: str, fingerprint: str, seconds: float, outputs: dict[str, Path], counts: dict[str, Any]) -> dict[str, Any]:
    """Write the marker of a finished stage, atomically: the envelope (:data:`ENVELOPE`), then its own ``counts``;
    returns it."""
    envelope = {"stage": name, "fingerprint": fingerprint, "seconds": round(seconds, 1), "e5kit": package_version(),
                "outputs": {key: str(path) for key, path in outputs.items()}}
    report = {**envelope, **{key: value for key, value in counts.items() if key not in ENVELOPE}}
    write_text_atomic(marker, json.dumps(report, indent=2, default=str))
    return report


def run_step(
    folder: Path,
    name: str,
    fingerprint: str,
    action: Callable[[], dict[str, Any]],
    *,
    force: bool = False,
    log: Callable[[str], None] = print,
    label: str | None = None,
    resumable: bool = False,
    owns_folder: bool = False,
    outputs: dict[str, Path] | None = None,
    marker: Path | None = None,
    start: Callable[[bool, bool], None] | None = None,
) -> dict[str, Any]:
    """Run ``action()`` unless ``folder/report.json`` (or ``marker``) says it finished under ``fingerprint``;
    returns the marker's content.

    A finished step under another fingerprint is redone; ``force`` redoes it regardless. The marker is
    removed before the work starts and written atomically after it returns. When the caller
    ``owns_folder``, an unfinished step's partial work is kept only if the step is ``resumable`` and was
    started under the same fingerprint; otherwise the folder is emptied first. Under torchrun every rank
    makes the same skip decision from the marker, and only rank 0 removes and writes it.

    ``start(resuming, discard)`` (a stage's :meth:`Stage.start`) is called on every process before the
    work; on rank 0 before the started-with fingerprint is written, so a rank that reads that file after
    rank 0 wrote it, and so takes itself to be resuming, finds the partial work rank 0 did not keep removed.
    """
    label = label or name
    marker = marker or folder / REPORT_FILE
    started_with = started_file(marker)
    done = read_marker(marker)
    if done is not None and not force:
        if done.get("fingerprint") == fingerprint:
            log(f"[{label}] done before, skipped (--force redoes it)")
            return done
        log(f"[{label}] settings or inputs changed since it ran: redoing it")
    resume = (resumable and not force and done is None and started_with.is_file()
              and started_with.read_text(encoding="utf-8") == fingerprint)
    if int(os.environ.get("RANK", "0")) != 0:  # a torchrun rank other than 0 does its share; rank 0 keeps the marker
        if start is not None:
            start(resume, False)
        return action()
    if owns_folder and folder.exists() and not resume:
        shutil.rmtree(folder)
    if start is not None:
        start(resume, resumable and not resume)
    marker.unlink(missing_ok=True)  # gone while the outputs are rewritten: its presence means finished
    created = not marker.parent.exists()
    folder.mkdir(parents=True, exist_ok=True)
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(started_with, fingerprint)
    log(f"[{label}] {'resuming' if resume else 'running'}")
    started = time.perf_counter()
    try:
        report = action()
    except BaseException:
        if created and [path.name for path in marker.parent.iterdir()] == [started_with.name]:
            shutil.rmtree(marker.parent)  # a run that failed before writing anything leaves no folder behind
        raise
    report = write_marker(marker, name, fingerprint, time.perf_counter() - started, outputs or {}, report)
    started_with.unlink(missing_ok=True)
    log(f"[{label}] finished in {report['seconds']:.0f}s")
    return report


def run_stage(
    stage: Stage, *, force: bool = False, log: Callable[[str], None] = print, upstream: str = "", label: str | None = None,
    owns_folder: bool = False,
) -> dict[str, Any]:
    """Run ``stage`` under the marker rule of :func:`run_step`; returns its report (the marker's content).

    Args:
        stage: The stage with its config.
        force: Redo it even when it finished under the same fingerprint.
        log: Where progress lines go.
        upstream: Fingerprint of the stages before it in a chain (a change there redoes this one).
        label: How progress lines name it (default: the stage's name).
        owns_folder: The output folder belongs to the caller's run (the quickstart, ``e5kit ablate``):
            partial work left there under other settings is removed before the stage starts.
    """
    return run_step(stage.output_dir, stage.name, stage.fingerprint(upstream), lambda: stage.execute(log), force=force, log=log,
                    label=label, resumable=stage.resumable, owns_folder=owns_folder, outputs=stage.outputs(), marker=stage.marker,
                    start=stage.start)
