"""kill -9 never corrupts mining, teacher scoring or fine-tuning (issue 14, item 3): after a kill, a rerun
(or ``--resume``) gives output identical to an uninterrupted run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from kill_points import KillPoint, at_seeded_call, run_killed, seeded_points
from safetensors.torch import load_file
from typer.testing import CliRunner

from e5kit.cli import app
from e5kit.data import teacher as teacher_module
from e5kit.data.teacher import load_teacher, partial_path, score_file

runner = CliRunner()


def cli(*argv) -> str:
    result = runner.invoke(app, [str(arg) for arg in argv])
    assert result.exit_code == 0, result.output
    return result.output


# ---------------------------------------------------------------------------------------------- mining
def mining_argv(beir_dir: Path, out: Path) -> list:
    return ["mine-negatives", "--queries", beir_dir / "queries.jsonl", "--corpus", beir_dir / "corpus.jsonl",
            "--positives", beir_dir / "qrels" / "train.tsv", "--out", out, "--negatives", "3", "--sampling", "random"]


def mined(out: Path) -> tuple[str, dict]:
    stats = json.loads(Path(f"{out}.stats.json").read_text())
    for varying in ("seconds", "search_seconds", "queries_per_s", "fingerprint", "outputs"):  # the fingerprint and outputs name OUT
        stats.pop(varying)
    return out.read_text(), stats


def test_mining_killed_while_writing_leaves_no_partial_file_and_reruns_to_the_same_output(beir_dir, tmp_path):
    # Given an uninterrupted mining run, and an earlier output that a second run replaces
    cli(*mining_argv(beir_dir, tmp_path / "straight.jsonl"))
    out = tmp_path / "mined.jsonl"
    out.write_text('{"query": "from an earlier run"}\n')
    Path(f"{out}.stats.json").write_text("{}")
    # When the second run is killed halfway through writing its records (12 queries)
    run_killed(mining_argv(beir_dir, out), at_seeded_call(0, "e5kit.data.finetune_formats:FinetuneExample.to_json", "after", 11))
    # Then the earlier file is whole and no stats claim to describe it
    assert out.read_text() == '{"query": "from an earlier run"}\n' and not Path(f"{out}.stats.json").exists()
    # And a rerun writes the uninterrupted run's records and stats, removing the killed run's half-written file
    cli(*mining_argv(beir_dir, out))
    assert mined(out) == mined(tmp_path / "straight.jsonl")
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


# ------------------------------------------------------------------------------------- teacher scoring
def mined_records(count: int) -> list[dict]:
    return [
        {"query": f"what is cell {i}", "pos": [f"cell protein {i} " * (1 + i % 3)], "neg": [f"cat dog {j} " * (1 + j) for j in range(i % 4)], "query_id": str(i)}
        for i in range(count)
    ]


#: (point, when, calls it gets scoring 18 records in blocks of 4 with batches of 3 pairs) for the seeded draws:
#: before or after a block is scored, after a block reached the disk, before the partial file is renamed into place.
TEACHER_POINTS = [
    ("e5kit.data.teacher:CrossEncoderTeacher.score_pairs", "before", 5),
    ("e5kit.data.teacher:CrossEncoderTeacher.score_pairs", "after", 5),
    ("os:fsync", "after", 5),
    ("os:replace", "before", 1),
]


def check_killed_scoring(kill: KillPoint, tmp_path: Path, tiny_cross_encoder_dir: Path, write_jsonl, monkeypatch) -> None:
    # Given an uninterrupted scoring run in blocks of 4 records
    monkeypatch.setattr(teacher_module, "BLOCK_RECORDS", 4)
    source = write_jsonl(tmp_path / "mined.jsonl", mined_records(18))
    argv = ["score-teacher", "--teacher", tiny_cross_encoder_dir, "--in", source, "--device", "cpu", "--batch-size", "3"]
    cli(*argv, "--out", tmp_path / "straight.jsonl")
    # When a run is killed at the point, then no output file claims to be complete
    out = tmp_path / "scored.jsonl"
    run_killed([*argv, "--out", out], kill)
    assert not out.exists()
    # And run again (resuming), it scores only what no whole block holds, and the file is the uninterrupted run's, byte for byte
    report = json.loads(re.search(r"wrote \S+: (\{.*\})", cli(*argv, "--out", out)).group(1))
    assert report["already_done"] % 4 == 0 and report["already_done"] + report["scored"] == 18
    assert out.read_bytes() == (tmp_path / "straight.jsonl").read_bytes() and not partial_path(out).exists()


@pytest.mark.parametrize("point", TEACHER_POINTS, ids=lambda point: f"{point[1]}-{point[0].rsplit(':', 1)[-1]}")
def test_teacher_scoring_killed_at_each_point_resumes_to_the_same_bytes(point, tmp_path, tiny_cross_encoder_dir, write_jsonl, monkeypatch):
    check_killed_scoring(at_seeded_call(0, *point, {"e5kit.data.teacher:BLOCK_RECORDS": 4}), tmp_path, tiny_cross_encoder_dir, write_jsonl, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 9))
def test_teacher_scoring_killed_at_more_seeded_points(seed, tmp_path, tiny_cross_encoder_dir, write_jsonl, monkeypatch):
    check_killed_scoring(seeded_points(seed, TEACHER_POINTS, {"e5kit.data.teacher:BLOCK_RECORDS": 4}), tmp_path, tiny_cross_encoder_dir, write_jsonl, monkeypatch)


def test_teacher_scoring_killed_inside_a_block_scores_that_block_again(tmp_path, tiny_cross_encoder_dir, write_jsonl, monkeypatch):
    # Given an uninterrupted run's output, and what a run killed while writing its second block left
    # in the partial file: one whole block of 4, two records of the next and half a line
    monkeypatch.setattr(teacher_module, "BLOCK_RECORDS", 4)
    source = write_jsonl(tmp_path / "mined.jsonl", mined_records(11))
    teacher = load_teacher(tiny_cross_encoder_dir, "cross-encoder", batch_size=3, device="cpu")
    score_file(teacher, source, tmp_path / "full.jsonl", show_progress=False)
    lines = (tmp_path / "full.jsonl").read_bytes().splitlines(keepends=True)
    out = tmp_path / "scored.jsonl"
    partial_path(out).write_bytes(b"".join(lines[:6]) + lines[6][:25])
    # When resuming
    report = score_file(teacher, source, out, show_progress=False)
    # Then the unfinished block was checked and scored again whole, and the bytes equal the uninterrupted run's
    assert report["already_done"] == 4 and report["scored"] == 7
    assert out.read_bytes() == (tmp_path / "full.jsonl").read_bytes() and not partial_path(out).exists()


class FailsAtBlock:
    """A teacher that raises when asked to score its ``block``-th block, as a run killed there."""

    def __init__(self, teacher, block: int) -> None:
        self.teacher, self.block, self.name = teacher, block, teacher.name

    def score_pairs(self, queries, passages):
        self.block -= 1
        if self.block == 0:
            raise RuntimeError("killed")
        return self.teacher.score_pairs(queries, passages)


def test_a_finished_output_stays_in_place_until_a_new_run_is_complete(tmp_path, tiny_cross_encoder_dir, write_jsonl, monkeypatch):
    # Given a finished output of 6 records, and the input grown to 11 (blocks of 4)
    monkeypatch.setattr(teacher_module, "BLOCK_RECORDS", 4)
    teacher = load_teacher(tiny_cross_encoder_dir, "cross-encoder", batch_size=3, device="cpu")
    out = tmp_path / "scored.jsonl"
    score_file(teacher, write_jsonl(tmp_path / "six.jsonl", mined_records(6)), out, show_progress=False)
    finished = out.read_bytes()
    source = write_jsonl(tmp_path / "mined.jsonl", mined_records(11))
    score_file(teacher, source, tmp_path / "full.jsonl", show_progress=False)
    # When a new run (the finished output is never resumed from) stops while scoring its second block
    with pytest.raises(RuntimeError, match="killed"):
        score_file(FailsAtBlock(teacher, 2), source, out, show_progress=False)
    # Then the finished output is as it was, and a rerun continues from the partial file to the uninterrupted output
    assert out.read_bytes() == finished and len(partial_path(out).read_bytes().splitlines()) == 4
    assert score_file(teacher, source, out, show_progress=False)["already_done"] == 4
    assert out.read_bytes() == (tmp_path / "full.jsonl").read_bytes()


# ----------------------------------------------------------------------------------------- fine-tuning
def finetune_argv(tiny_bert_dir: Path, scored: Path, output_dir: Path) -> list:
    settings = {
        "init_model": tiny_bert_dir, "output_dir": output_dir, "data.datasets": f"[{{name: tiny, format: flag, path: {scored}}}]",
        "max_steps": 5, "checkpoint_every": 2, "batch_size": 4, "chunk_size": 3, "hard_negatives": 2, "lr": "1e-3", "warmup_steps": 1,
        "query_max_length": 32, "passage_max_length": 32, "seed": 3,
    }
    return ["finetune", *[part for key, value in settings.items() for part in ("--set", f"{key}={value}")]]


def test_finetune_killed_then_resumed_equals_an_uninterrupted_run(tmp_path, tiny_bert_dir, tiny_cross_encoder_dir, write_jsonl):
    # Given teacher-scored data and an uninterrupted 5-step run (checkpoints every 2 steps)
    scored = tmp_path / "scored.jsonl"
    score_file(load_teacher(tiny_cross_encoder_dir, device="cpu"), write_jsonl(tmp_path / "mined.jsonl", mined_records(14)), scored, show_progress=False)
    cli(*finetune_argv(tiny_bert_dir, scored, tmp_path / "straight"))
    # When a run is killed after logging step 3 (its last checkpoint is step 2) and resumed with --resume
    run_killed(finetune_argv(tiny_bert_dir, scored, tmp_path / "killed"), KillPoint("e5kit.training.metrics:MetricsLog.log", count=3))
    cli(*finetune_argv(tiny_bert_dir, scored, tmp_path / "killed"), "--resume")
    # Then the metrics (loss, learning rate, gradient norm per step) and the final weights equal the uninterrupted run's
    def steps(run: str) -> list[dict]:
        return [{key: record[key] for key in ("step", "loss", "lr", "grad_norm")} for record in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())]

    assert steps("killed") == steps("straight") and len(steps("killed")) == 5
    killed, straight = load_file(tmp_path / "killed" / "final" / "model.safetensors"), load_file(tmp_path / "straight" / "final" / "model.safetensors")
    assert killed.keys() == straight.keys() and all(killed[name].equal(straight[name]) for name in killed)
