"""``e5kit.stage``: one marker (report.json with a fingerprint) decides whether a stage is skipped, redone
or resumed, for library stages and the quickstart's own steps alike."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from e5kit.stage import REPORT_FILE, STARTED_FILE, Stage, read_report, run_stage, run_step, settings_fingerprint


class CountConfig(BaseModel):
    source: Path
    output_dir: Path
    factor: int = 1
    workers: int = 1


class CountStage(Stage[CountConfig]):
    """A stage that counts its input's lines into ``count.txt``."""

    name = "count"
    config_class = CountConfig
    runtime_fields = frozenset({"workers"})
    resumable = True
    runs = 0

    def inputs(self) -> list[Path]:
        return [self.config.source]

    def outputs(self) -> dict[str, Path]:
        return {"count": self.output_dir / "count.txt"}

    def execute(self, log) -> dict[str, Any]:
        CountStage.runs += 1
        lines = len(self.config.source.read_text().splitlines()) * self.config.factor
        (self.output_dir / "count.txt").write_text(str(lines))
        return {"lines": lines}


def _stage(tmp_path, **settings) -> CountStage:
    return CountStage(CountConfig(source=tmp_path / "in.txt", output_dir=tmp_path / "out", **settings))


def test_a_finished_stage_is_skipped_until_its_settings_or_inputs_change(tmp_path):
    # Given a stage that finished on an input
    (tmp_path / "in.txt").write_text("a\nb\n")
    CountStage.runs = 0
    lines: list[str] = []
    first = run_stage(_stage(tmp_path), log=lines.append)
    # Then its marker holds the envelope every stage shares and its own counts
    marker = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    assert marker == first and marker["stage"] == "count" and marker["lines"] == 2
    assert marker["outputs"] == {"count": str(tmp_path / "out" / "count.txt")} and {"fingerprint", "seconds", "e5kit"} <= set(marker)
    assert not (tmp_path / "out" / STARTED_FILE).exists()
    # When it runs again unchanged, or with only a runtime setting changed, Then it is skipped
    run_stage(_stage(tmp_path), log=lines.append)
    run_stage(_stage(tmp_path, workers=4), log=lines.append)
    assert CountStage.runs == 1 and lines.count("[count] done before, skipped (--force redoes it)") == 2
    # When a setting that shapes the output changes, Then it is redone
    assert run_stage(_stage(tmp_path, factor=3), log=lines.append)["lines"] == 6 and CountStage.runs == 2
    # When the input is rewritten, Then it is redone, and --force redoes it regardless
    (tmp_path / "in.txt").write_text("a\nb\nc\n")
    os.utime(tmp_path / "in.txt", ns=(1, 1))
    assert run_stage(_stage(tmp_path, factor=3), log=lines.append)["lines"] == 9 and CountStage.runs == 3
    run_stage(_stage(tmp_path, factor=3), force=True, log=lines.append)
    assert CountStage.runs == 4 and "[count] settings or inputs changed since it ran: redoing it" in lines


def test_a_chained_stage_is_redone_when_a_stage_before_it_changes(tmp_path):
    # Given a stage finished under an upstream fingerprint
    (tmp_path / "in.txt").write_text("a\n")
    CountStage.runs = 0
    run_stage(_stage(tmp_path), upstream="before-1", log=lambda line: None)
    # When the stage before it changed, Then it is redone; under the same upstream, skipped
    run_stage(_stage(tmp_path), upstream="before-2", log=lambda line: None)
    run_stage(_stage(tmp_path), upstream="before-2", log=lambda line: None)
    assert CountStage.runs == 2


def _progressing(calls):
    def action(folder):
        calls.append(sorted(p.name for p in folder.iterdir()))
        (folder / "progress").write_text("x")
        return {"ok": True}

    return action


def test_an_unfinished_step_in_an_owned_folder_keeps_its_progress_only_under_the_same_fingerprint(tmp_path):
    # Given a resumable step killed after writing progress (no marker), started under fingerprint A
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / STARTED_FILE).write_text(settings_fingerprint({"k": 1}))
    (folder / "progress").write_text("half")
    calls: list[list[str]] = []
    step = _progressing(calls)
    # When it runs again under A, Then its progress is still there for it to resume from
    run_step(folder, "s", settings_fingerprint({"k": 1}), lambda: step(folder), log=lambda line: None, resumable=True, owns_folder=True)
    assert "progress" in calls[0]
    # And a killed run under another fingerprint starts from an empty folder
    (folder / REPORT_FILE).unlink()
    (folder / STARTED_FILE).write_text(settings_fingerprint({"k": 1}))
    run_step(folder, "s", settings_fingerprint({"k": 2}), lambda: step(folder), log=lambda line: None, resumable=True, owns_folder=True)
    assert "progress" not in calls[1]
    # And a step that cannot resume always starts empty
    (folder / REPORT_FILE).unlink()
    run_step(folder, "s", settings_fingerprint({"k": 2}), lambda: step(folder), log=lambda line: None, owns_folder=True)
    assert calls[2] == [STARTED_FILE]
    # And a folder the caller does not own is never emptied (a user's --output)
    (folder / "mine.txt").write_text("keep")
    run_step(folder, "s", settings_fingerprint({"k": 3}), lambda: step(folder), log=lambda line: None)
    assert "mine.txt" in calls[3]


def test_a_marker_that_is_not_json_counts_as_unfinished(tmp_path):
    # Given a report.json cut short (not written by e5kit's atomic writer)
    (tmp_path / REPORT_FILE).write_text('{"stage": ')
    # Then it does not say the stage finished
    assert read_report(tmp_path) is None


class FileStage(CountStage):
    """A one-file stage: ``OUT`` with its marker beside it, and partial work in ``OUT.partial``."""

    name = "file"
    discarded = 0

    @property
    def output_dir(self) -> Path:
        return self.config.output_dir.parent

    @property
    def marker(self) -> Path:
        return Path(f"{self.config.output_dir}.stats.json")

    def discard_partial(self) -> None:
        FileStage.discarded += 1
        Path(f"{self.config.output_dir}.partial").unlink(missing_ok=True)

    def execute(self, log) -> dict[str, Any]:
        FileStage.runs += 1
        partial = Path(f"{self.config.output_dir}.partial")
        resumed = partial.is_file()
        self.config.output_dir.write_text("done")
        partial.unlink(missing_ok=True)
        return {"resumed": resumed, "resuming": self.resuming}


def test_a_one_file_stage_keeps_its_marker_beside_its_output_and_resumes_only_its_own_partial_work(tmp_path):
    # Given a one-file stage's input, and partial work a killed run left under other settings
    (tmp_path / "in.txt").write_text("a\n")
    out = tmp_path / "out.txt"
    Path(f"{out}.partial").write_text("half")
    Path(f"{out}.stats.json.started").write_text("another fingerprint")
    FileStage.runs = FileStage.discarded = 0

    def stage(**settings):
        return FileStage(CountConfig(source=tmp_path / "in.txt", output_dir=out, **settings))

    # When it runs, Then the partial work is discarded (not resumed) and the marker is OUT.stats.json
    report = run_stage(stage(), log=lambda line: None)
    assert report["resumed"] is False and FileStage.discarded == 1 and json.loads(Path(f"{out}.stats.json").read_text()) == report
    assert not Path(f"{out}.stats.json.started").exists()
    # When a run killed under the same fingerprint left partial work, Then it is told so and finds its work
    Path(f"{out}.stats.json").unlink()
    Path(f"{out}.partial").write_text("half")
    Path(f"{out}.stats.json.started").write_text(stage().fingerprint())
    report = run_stage(stage(), log=lambda line: None)
    assert report["resumed"] is True and report["resuming"] is True and FileStage.discarded == 1
    # And a finished run is skipped
    run_stage(stage(), log=lambda line: None)
    assert FileStage.runs == 2


def test_a_run_that_fails_before_writing_anything_leaves_no_folder(tmp_path):
    # Given a stage whose work fails at once, into a folder that does not exist yet
    (tmp_path / "in.txt").write_text("a\n")

    class Failing(CountStage):
        def execute(self, log):
            raise ValueError("bad setting")

    # When it runs, Then the error comes through and no folder (with only a started-with file) is left
    with pytest.raises(ValueError, match="bad setting"):
        run_stage(Failing(CountConfig(source=tmp_path / "in.txt", output_dir=tmp_path / "new" / "out")), log=lambda line: None)
    assert not (tmp_path / "new" / "out").exists()
