"""Pair shards: path resolution, Parquet/JSONL reading, weighted sampling, exact resume position."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest

from e5kit.data.shards import PairSampler, count_sources, iter_rows
from e5kit.io.pairs import ShardError, resolve_shard_paths


def drain(sampler, batches):
    return [[(p.query, p.passage, p.source) for p in sampler.next_batch()] for _ in range(batches)]


def test_paths_expand_files_folders_and_globs(tmp_path, make_pairs, write_jsonl, write_parquet):
    # Given shards in a folder tree and a non-shard file
    a = write_parquet(tmp_path / "d" / "a.parquet", make_pairs(3))
    b = write_jsonl(tmp_path / "d" / "sub" / "b.jsonl", make_pairs(3))
    (tmp_path / "d" / "notes.txt").write_text("x")
    # When a folder, a glob and a file are resolved
    # Then every shard appears once, and a pattern matching nothing is an error naming it
    assert resolve_shard_paths([tmp_path / "d", str(tmp_path / "d" / "*.parquet"), a]) == [a, b]
    with pytest.raises(ShardError, match="nothing-here"):
        resolve_shard_paths([tmp_path / "nothing-here*.parquet"])


def test_parquet_and_jsonl_gz_rows_and_sources(tmp_path, make_pairs, write_parquet):
    # Given a Parquet shard with two sources and a gzipped JSONL shard without a source field
    records = make_pairs(5, source="reddit") + make_pairs(3, seed=1, source="wiki")
    parquet = write_parquet(tmp_path / "mixed.parquet", records, row_group_size=2)
    jsonl = tmp_path / "news-2024.jsonl.gz"
    with gzip.open(jsonl, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in make_pairs(4, seed=2))
    # When the sources are counted and rows read from an offset
    # Then the counts are per source, the stem names source-less rows, and offsets skip exactly
    assert count_sources(parquet) == Counter({"reddit": 5, "wiki": 3})
    assert count_sources(jsonl) == Counter({"news-2024": 4})
    rows = list(iter_rows(parquet, start=3))
    assert [row for row, *_ in rows] == [3, 4, 5, 6, 7]
    assert rows[0][1] == records[3]["query"] and rows[-1][3] == "wiki"


def test_missing_column_is_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Given a Parquet file without a passage column
    pq.write_table(pa.table({"query": ["a"]}), tmp_path / "bad.parquet")
    # When it is sampled, Then the error names the file and the column
    with pytest.raises(ShardError, match=r"bad.parquet: missing column\(s\) passage"):
        PairSampler([tmp_path], batch_size=2)


def test_invalid_rows_are_skipped_and_counted(tmp_path, write_jsonl):
    # Given a JSONL shard with an empty query, a missing passage and a zero-width-only passage among valid pairs
    write_jsonl(
        tmp_path / "s.jsonl",
        [{"query": "a", "passage": "b"}, {"query": " ", "passage": "c"}, {"query": "d"}, {"query": "g", "passage": "\u200b\u2060"}, {"query": "e", "passage": "f"}],
    )
    sampler = PairSampler([tmp_path], batch_size=2)
    # When a batch is drawn
    batch = sampler.next_batch()
    # Then only the valid pairs come out and each skip is counted with its reason
    assert sorted(p.query for p in batch) == ["a", "e"]
    assert sampler.skipped == {"s: query has no visible text": 1, "s: passage missing or not a string": 1, "s: passage has no visible text": 1}


def test_weighted_sampling_follows_source_weights(tmp_path, make_pairs, write_parquet, write_jsonl):
    # Given two sources, and weights 3:1
    write_parquet(tmp_path / "a.parquet", make_pairs(40, source="alpha"))
    write_jsonl(tmp_path / "b.jsonl", make_pairs(40, seed=1, source="beta"))
    sampler = PairSampler([tmp_path], batch_size=40, source_weights={"alpha": 3, "beta": 1}, seed=1)
    # When 50 batches are drawn (sources cycle when exhausted)
    counts = Counter(source for batch in drain(sampler, 50) for _, _, source in batch)
    # Then about three quarters come from alpha
    assert counts["alpha"] / sum(counts.values()) == pytest.approx(0.75, abs=0.02)


def test_unknown_weighted_source_is_an_error(tmp_path, make_pairs, write_jsonl):
    write_jsonl(tmp_path / "b.jsonl", make_pairs(4, source="beta"))
    with pytest.raises(ShardError, match="data.source_weights names source.*gamma.*found: beta"):
        PairSampler([tmp_path], batch_size=2, source_weights={"gamma": 1.0})


def test_source_homogeneous_batches_hold_one_source(tmp_path, make_pairs, write_parquet):
    # Given one Parquet shard holding two interleaved sources
    records = [r for pair in zip(make_pairs(30, source="alpha"), make_pairs(30, seed=1, source="beta")) for r in pair]
    write_parquet(tmp_path / "mixed.parquet", records, row_group_size=7)
    sampler = PairSampler([tmp_path], batch_size=6, seed=3, source_homogeneous=True)
    # When batches are drawn
    batches = drain(sampler, 12)
    # Then each batch comes from a single source, and both sources are used
    assert all(len({source for _, _, source in batch}) == 1 for batch in batches)
    assert {batch[0][2] for batch in batches} == {"alpha", "beta"}


@pytest.mark.parametrize("homogeneous", [False, True])
def test_state_dict_resumes_exactly(tmp_path, make_pairs, write_parquet, write_jsonl, homogeneous):
    # Given two sources with files small enough to wrap around into later passes
    write_parquet(tmp_path / "a1.parquet", make_pairs(13, source="alpha"), row_group_size=4)
    write_parquet(tmp_path / "a2.parquet", make_pairs(9, seed=5, source="alpha"), row_group_size=4)
    write_jsonl(tmp_path / "b.jsonl", make_pairs(11, seed=1, source="beta"))
    options = {"batch_size": 5, "seed": 7, "source_homogeneous": homogeneous}
    uninterrupted = drain(PairSampler([tmp_path], **options), 20)
    # When a sampler stops after 8 batches and a fresh one loads its JSON-serialised state
    first = PairSampler([tmp_path], **options)
    head = drain(first, 8)
    resumed = PairSampler([tmp_path], **options)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    # Then the resumed batches continue exactly where the first sampler stopped
    assert head + drain(resumed, 12) == uninterrupted


def test_a_folder_of_compressed_jsonl_shards_is_read_with_every_codec_the_decompression_layer_reads(tmp_path, make_pairs):
    from corrupt_corpus import CODECS

    # Given a folder of JSONL shards, one per codec (one with an upper-case suffix), beside a hidden
    # temporary file an unfinished write left
    folder = tmp_path / "pairs"
    folder.mkdir()
    for number, suffix in enumerate(CODECS):
        lines = "".join(json.dumps(r) + "\n" for r in make_pairs(3, seed=number)).encode()
        (folder / f"part{number}.jsonl{suffix.upper() if number == 0 else suffix}").write_bytes(CODECS[suffix](lines))
    (folder / ".part9.jsonl.gz.123.0123456789ab.tmp").write_bytes(b"half")
    # When the folder is given to the training sampler
    sampler = PairSampler([folder], batch_size=4)
    # Then every shard is found and read whole, each a source named by its stem, and the temporary is not
    assert [path.name for path in sampler.files] == ["part0.jsonl.GZ", "part1.jsonl.bz2", "part2.jsonl.xz", "part3.jsonl.zst"]
    assert sampler.rows_by_source == Counter({f"part{number}": 3 for number in range(len(CODECS))})


@pytest.mark.parametrize("files", [[], ["pairs.jsonl.lz4", "notes.txt"]], ids=["empty", "no-readable-shard"])
def test_a_folder_without_a_readable_shard_is_one_error_naming_it(tmp_path, files):
    # Given a folder that is empty, or holds only files that are not shards e5kit reads
    folder = tmp_path / "pairs"
    folder.mkdir()
    for name in files:
        (folder / name).write_bytes(b"x")
    # When it is given to the training sampler, then the error is one line naming the folder
    with pytest.raises(ShardError, match=rf"^{folder}: folder holds no pair shard \(\.parquet, \.jsonl, \.jsonl\.gz, .*\.jsonl\.zst\)") as error:
        PairSampler([folder], batch_size=4)
    assert "\n" not in str(error.value) and (not files or "e.g. notes.txt" in str(error.value))


def test_pretrain_on_a_folder_without_shards_is_a_one_line_error_naming_it(tmp_path, tiny_bert_dir):
    from typer.testing import CliRunner

    from e5kit.cli import app

    # Given a data folder that holds only an LZ4-compressed file
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / "pairs.jsonl.lz4").write_bytes(b"x")
    # When pre-training is started on it
    result = CliRunner().invoke(app, ["pretrain", "--set", f"init_model={tiny_bert_dir}", "--set", f"data.paths=[{tmp_path / 'pairs'}]",
                                      "--set", f"output_dir={tmp_path / 'run'}", "--set", "max_steps=1", "--set", "batch_size=2"])
    # Then it exits 2 with one error line naming the folder, and no run folder was started
    assert result.exit_code == 2 and f"error: {tmp_path / 'pairs'}: folder holds no pair shard" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run" / "final").exists()
