"""Progress bars (issue 18, item 7): drawn on a terminal at any size once work takes a while, never
when standard error is not a terminal or under ``-q``; curation counts records across its workers."""

from __future__ import annotations

import io
import json
import os
import re
import sys

import pytest
from typer.testing import CliRunner

from e5kit import progress
from e5kit.cli import app
from e5kit.data.curation import CurateConfig, curate
from e5kit.encoder import Encoder


@pytest.fixture
def stderr_terminal(monkeypatch, capsys):
    """Standard error counts as a terminal (pytest's capture stands in for it) and bars appear at once;
    -q is undone afterwards. Returns a function giving what was written to standard error."""
    monkeypatch.setattr(progress, "_watched", lambda: True)
    monkeypatch.setattr(progress, "DELAY_S", 0)
    yield lambda: capsys.readouterr().err
    progress.set_quiet(False)


@pytest.fixture(scope="module")
def encoder(tiny_unnormalized_dir):
    return Encoder.load(tiny_unnormalized_dir, device="cpu")


def test_encoding_a_few_texts_shows_a_bar_on_a_terminal(encoder, stderr_terminal):
    # Given standard error on a terminal; When three texts are encoded (far fewer than any size threshold)
    encoder.encode(["cells", "cats", "sun"])
    # Then the encoding bar is drawn and reaches 3/3
    assert re.search(r"encoding: 100%.*3/3", stderr_terminal())


def test_no_bar_when_standard_error_is_not_a_terminal(encoder, monkeypatch, capsys):
    # Given standard error redirected to a file-like object that is no terminal
    redirected = io.StringIO()
    monkeypatch.setattr(sys, "stderr", redirected)
    monkeypatch.setattr(progress, "DELAY_S", 0)
    # When texts are encoded; Then nothing is written
    encoder.encode(["cells", "cats"])
    assert redirected.getvalue() == "" and not progress.progress_shown()


@pytest.mark.parametrize(("options", "shown"), [(["-q"], False), (["--log-level", "error"], False), ([], True), (["-v"], True)])
def test_quiet_options_turn_every_bar_off(encoder, stderr_terminal, options, shown, restore_root_level):
    # Given the CLI run with (or without) -q
    assert CliRunner().invoke(app, [*options, "config", "list"]).exit_code == 0
    # When texts are encoded on a terminal
    encoder.encode(["cells", "cats"])
    # Then the bar is drawn only without -q
    assert ("encoding" in stderr_terminal()) is shown
    assert progress.progress_shown() is shown


def test_a_caller_can_refuse_a_bar(encoder, stderr_terminal):
    encoder.encode(["cells", "cats"], show_progress=False)
    assert stderr_terminal() == ""


def test_curation_counts_records_across_worker_processes(tmp_path, stderr_terminal):
    # Given two files (two shards) of 1,500 and 700 records, curated by two worker processes
    for name, count in (("a", 1500), ("b", 700)):
        rows = [{"q": f"query number {i} of {name}", "p": f"passage number {i} of file {name} with some words"} for i in range(count)]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = CurateConfig.model_validate({
        "output_dir": str(tmp_path / "out"), "workers": 2,
        "sources": [{"type": "generic", "paths": [str(tmp_path / "*.jsonl")], "options": {"query_column": "q", "passage_column": "p"}}],
        "filters": {"near_dedup": {"enabled": False}, "language": {"enabled": False}},
    })
    # When curated
    report = curate(config)
    # Then a records bar counted every record read, besides the shards bar
    drawn = stderr_terminal()
    assert report["totals"]["read"] == 2200
    assert max(int(n) for n in re.findall(r"records: (\d+) ?record", drawn)) == 2200
    assert re.search(r"shards: 100%.*2/2", drawn)


def test_library_bars_follow_the_same_rule_off_a_terminal(monkeypatch):
    # Given the CLI run with standard error not a terminal (as under CliRunner or a redirect)
    from transformers.utils import logging as transformers_logging
    from typer.testing import CliRunner

    from e5kit.cli import app

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    transformers_logging.enable_progress_bar()
    try:
        # When any command runs, Then transformers' and the Hub's bars (loading weights, writing shards) are off too
        assert CliRunner().invoke(app, ["config", "list"]).exit_code == 0
        assert not transformers_logging.is_progress_bar_enabled()
        assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    finally:
        transformers_logging.enable_progress_bar()
        from huggingface_hub.utils import enable_progress_bars

        enable_progress_bars()
