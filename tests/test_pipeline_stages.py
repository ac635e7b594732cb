"""``e5kit.pipeline.run_stage``: a finished stage is skipped only under the settings it ran with, and an
unfinished resumable stage keeps its progress only under the same settings."""

from __future__ import annotations

from e5kit.pipeline import run_stage, settings_fingerprint


def _stage(calls):
    def action(folder):
        calls.append(sorted(p.name for p in folder.iterdir()))
        (folder / "progress").write_text("x")
        return {"ok": True}

    return action


def test_a_finished_stage_is_skipped_under_its_settings_and_redone_under_others(tmp_path):
    # Given a stage that finished with settings A
    calls, lines = [], []
    run_stage(tmp_path / "s", _stage(calls), force=False, log=lines.append, label="s", settings={"k": 1})
    # When it is asked again with A, Then it is skipped; with B, Then it runs again
    run_stage(tmp_path / "s", _stage(calls), force=False, log=lines.append, label="s", settings={"k": 1})
    assert len(calls) == 1 and "[s] done before, skipped (--force redoes it)" in lines
    summary = run_stage(tmp_path / "s", _stage(calls), force=False, log=lines.append, label="s", settings={"k": 2})
    assert len(calls) == 2 and "[s] settings changed since it ran: redoing it" in lines and summary["ok"]


def test_an_unfinished_resumable_stage_keeps_its_progress_only_under_the_same_settings(tmp_path):
    # Given a resumable stage killed after writing progress (no marker) under settings A
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "stage-settings.txt").write_text(settings_fingerprint({"k": 1}))
    (folder / "progress").write_text("half")
    calls = []
    # When it runs again under A, Then its progress is still there for it to resume from
    run_stage(folder, _stage(calls), force=False, log=lambda line: None, label="s", settings={"k": 1}, resumable=True)
    assert "progress" in calls[0]
    # And a killed run under other settings starts from an empty folder
    (folder / "stage.json").unlink()
    run_stage(folder, _stage(calls), force=False, log=lambda line: None, label="s", settings={"k": 2}, resumable=True)
    assert "progress" not in calls[1]
    # And a stage that cannot resume always starts empty
    (folder / "stage.json").unlink()
    run_stage(folder, _stage(calls), force=False, log=lambda line: None, label="s", settings={"k": 2})
    assert calls[2] == ["stage-settings.txt"]
