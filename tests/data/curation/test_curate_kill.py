"""kill -9 never corrupts curation (issue 14, item 3): workers die with their parent, temporary names
never collide, and a rerun after a kill at any point gives the uninterrupted run's output."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from curation_dumps import json_lines, write_lines
from kill_points import KillPoint, at_seeded_call, run_killed, seeded_points

from e5kit.data.curation import CurateConfig, curate
from e5kit.data.curation.parquet import ParquetWriter, pair_schema

NEWS = [
    {"title": f"Headline {i} about the city council and its budget", "description": f"On day {i} the council approved money for parks, roads, schools and the public library number {i % 7}."}
    for i in range(48)
]
#: (point, when, calls it gets in one run over FILES) for the seeded draws; one worker, so they run in this process.
POINTS = [
    ("e5kit.data.curation.shard:process_shard", "after", 4),  # some shards done (parquet + marker), others not started
    ("pyarrow.parquet:ParquetWriter.write_table", "after", 10),  # a shard or final file half written
    ("e5kit.io.files:AtomicFile.commit", "after", 17),  # any file just renamed into place: shard, marker, final shard, report
]


def write_config(tmp_path: Path, output: Path, workers: int = 1) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    for number in range(4):  # four shards, with duplicates across them
        write_lines(raw / f"news-{number}.jsonl", json_lines(NEWS[number * 10 : number * 10 + 18]))
    config = {
        "output_dir": str(output),
        "workers": workers,
        "shard_size": 9,
        "sources": [{"type": "news", "paths": [str(raw / "news-*.jsonl")], "filters": {"length": {"min_passage_words": 5}}}],
    }
    path = tmp_path / f"curate-{output.name}.json"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def outputs(folder: Path) -> dict:
    """The pairs and the report's counts, with the run's own folder (in provenance) left out."""
    report = json.loads((folder / "report.json").read_text())
    found = {
        "pairs": {path.name: pq.read_table(path).to_pylist() for path in sorted((folder / "pairs").glob("*.parquet"))},
        "sources": report["sources"],
        "pair_files": report["pair_files"],
    }
    return json.loads(json.dumps(found).replace(str(folder.parent), "RUN"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    tmp_path = tmp_path_factory.mktemp("uninterrupted")
    config = write_config(tmp_path, tmp_path / "out")
    curate(CurateConfig.model_validate(json.loads(config.read_text())))
    return outputs(tmp_path / "out")


def check_killed_curate(kill: KillPoint, tmp_path: Path, uninterrupted: dict) -> None:
    # Given a curate run killed at the point
    output = tmp_path / "out"
    config = write_config(tmp_path, output)
    run_killed(["curate", "--config", config], kill)
    # When it is run again, then the output equals the uninterrupted run's and no temporary file is left
    curate(CurateConfig.model_validate(json.loads(config.read_text())))
    assert outputs(output) == uninterrupted, str(kill)
    assert not [path for path in output.rglob("*") if path.name.endswith(".tmp")]


@pytest.mark.parametrize("point", POINTS, ids=lambda point: point[0].rsplit(".", 1)[-1])
def test_curate_killed_at_each_point_reruns_to_the_uninterrupted_output(point, tmp_path, uninterrupted):
    check_killed_curate(at_seeded_call(0, *point), tmp_path, uninterrupted)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 9))
def test_curate_killed_at_more_seeded_points(seed, tmp_path, uninterrupted):
    check_killed_curate(seeded_points(seed, POINTS), tmp_path, uninterrupted)


def test_a_rerun_killed_while_writing_the_final_shards_leaves_the_complete_pairs_of_the_last_run(tmp_path, uninterrupted):
    # Given a finished curation whose pairs/ spans several final shards
    output = tmp_path / "out"
    config = write_config(tmp_path, output)
    curate(CurateConfig.model_validate(json.loads(config.read_text())))
    assert len(uninterrupted["pairs"]) > 1
    # When a rerun (every shard resumed) is killed right after its first final shard is written
    run_killed(["curate", "--config", config], KillPoint("e5kit.data.curation.parquet:ParquetWriter.close", count=1, when="after"))
    # Then pairs/ is still the last complete set, never a mix of new and missing shards that training would read
    pairs = {path.name: pq.read_table(path).to_pylist() for path in sorted((output / "pairs").glob("*.parquet"))}
    assert json.loads(json.dumps(pairs).replace(str(tmp_path), "RUN")) == uninterrupted["pairs"]


def test_a_rerun_keeps_the_shards_of_sources_it_does_not_curate(tmp_path):
    # Given a pairs/ folder that also holds another run's source
    output = tmp_path / "out"
    config = write_config(tmp_path, output)
    (output / "pairs").mkdir(parents=True)
    other = output / "pairs" / "reddit-00000.parquet"
    writer = ParquetWriter(other, pair_schema(with_dedup=False))
    writer.add({"query": "q", "passage": "p", "source": "reddit", "meta": "{}"})
    writer.close()
    # When this run's news source is curated into it, Then the reddit shard is still there beside the news shards
    curate(CurateConfig.model_validate(json.loads(config.read_text())))
    names = sorted(path.name for path in (output / "pairs").glob("*.parquet"))
    assert "reddit-00000.parquet" in names and any(name.startswith("news-") for name in names)
    assert pq.read_table(output / "pairs" / "reddit-00000.parquet").to_pylist()[0]["query"] == "q"


#: Runs curate with every worker blocked forever in its reader (as orphans were found: blocked on a queue).
BLOCKED_WORKERS = """
import json, sys, time
from e5kit.data import curation
from e5kit.data.readers import news

def blocked(*args, **kwargs):
    time.sleep(3600)
    yield

news.read = blocked
curation.curate(curation.CurateConfig.model_validate(json.loads(open(sys.argv[1]).read())))
"""


def running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_workers_die_when_curate_is_killed(tmp_path):
    # Given curate running two worker processes, both busy
    config = write_config(tmp_path, tmp_path / "out", workers=2)
    parent = subprocess.Popen([sys.executable, "-c", BLOCKED_WORKERS, str(config)], env={**os.environ, "OMP_NUM_THREADS": "1"})
    workers: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.2)
            workers = [child for child in psutil.Process(parent.pid).children() if running(child)]
        assert len(workers) >= 2, "the workers did not start"
        # When the parent is killed with SIGKILL
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        # Then its workers end too instead of living on as orphans
        deadline = time.monotonic() + 15
        while any(running(worker) for worker in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [worker.pid for worker in workers if running(worker)]
    finally:  # nothing this test started outlives it, even when it fails
        if parent.poll() is None:
            parent.kill()
        for worker in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()


def test_a_rerun_writing_a_shard_an_old_worker_still_writes_never_crashes(tmp_path):
    # Given a worker of a killed run still writing work/news-00000.parquet
    path = tmp_path / "news-00000.parquet"
    row = {"query": "q", "passage": "p", "source": "news", "meta": "{}", "dedup_key": 1, "minhash": b"", "query_words": 1, "passage_words": 1}
    old = ParquetWriter(path, pair_schema(with_dedup=True))
    old.add(row)
    # When the rerun writes the same shard and the old worker finishes in the middle of it
    rerun = ParquetWriter(path, pair_schema(with_dedup=True))
    rerun.add(row)
    rerun.add(row)
    old.close()
    rerun.close()
    # Then neither fails (no FileNotFoundError on a shared temporary name) and the rerun's file is complete
    assert pq.read_table(path).num_rows == 2
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
