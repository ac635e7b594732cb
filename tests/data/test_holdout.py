"""Held-out retrieval splits per source (``e5kit holdout``): seeded, order-free, and decontaminated from training."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from e5kit.cli import app
from e5kit.data.filters.decontaminate import words
from e5kit.data.holdout import HELD_OUT, HoldoutConfig, holdout
from e5kit.data.shards import iter_rows
from e5kit.io.beir import load_beir
from e5kit.io.pairs import resolve_shard_paths
from e5kit.io.text import normalized_text_key

VOCABULARY = [f"w{i}" for i in range(400)]


def _text(rng: random.Random, words_count: int) -> str:
    return " ".join(rng.choice(VOCABULARY) for _ in range(words_count))


def _write_shard(path, rows):
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([(c, pa.string()) for c in ("query", "passage", "source", "meta")])), path)


@pytest.fixture
def curated(tmp_path):
    """Two sources of 300 pairs (random 20-word passages), with traps: a query shared by three pairs,
    a training pair copying a later held-out passage, an upper-case copy of a query, and a 40-pair source."""
    rng = random.Random(0)
    folder = tmp_path / "pairs"
    folder.mkdir()
    for source, count in (("alpha", 300), ("beta", 300), ("tiny", 40)):
        rows = [{"query": f"{source} question {i} " + _text(rng, 4), "passage": _text(rng, 20), "source": source, "meta": "{}"} for i in range(count)]
        if source == "alpha":
            rows += [{"query": rows[0]["query"], "passage": _text(rng, 20), "source": source, "meta": "{}"} for _ in range(2)]
            rows += [{"query": f"copy {i}", "passage": rows[i]["passage"], "source": source, "meta": "{}"} for i in range(300)]
            rows += [{"query": rows[i]["query"].upper(), "passage": _text(rng, 20), "source": "beta", "meta": "{}"} for i in range(300)]
        _write_shard(folder / f"{source}-00000.parquet", rows)
    return folder


def _files(root):
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def _training_rows(output):
    return [row for shard in resolve_shard_paths([output / "pairs"]) for row in iter_rows(shard)]


def test_no_heldout_query_or_passage_reaches_the_training_shards(curated, tmp_path):
    # Given curated pairs with copies and overlaps of every pair
    # When 10% of each source is held out
    report = holdout(HoldoutConfig(pairs=[str(curated)], output_dir=tmp_path / "out", fraction=0.1, min_queries=100))

    # Then every source large enough has a BEIR split whose queries find their own passages
    assert report["eval_dirs"] == [str(tmp_path / "out/heldout" / s) for s in ("alpha", "beta")]
    heldout_texts = set()
    for eval_dir in report["eval_dirs"]:
        data = load_beir(eval_dir)
        assert len(data.queries) >= 10 and set(data.qrels) == set(data.queries)
        heldout_texts |= {normalized_text_key(t) for t in data.queries.values()}
        heldout_texts |= {normalized_text_key(d["text"]) for d in data.corpus.values()}
    alpha = load_beir(tmp_path / "out/heldout/alpha")
    # And a query shared by several pairs is held out with all its passages, or not at all
    assert sorted({len(relevant) for relevant in alpha.qrels.values()}) in ([1], [1, 3])
    # And no training query or passage equals a held-out text or shares a 13-word n-gram with one
    heldout_ngrams = {tuple(words(text)[i : i + 13]) for text in heldout_texts for i in range(len(words(text)) - 12)}
    training = _training_rows(tmp_path / "out")
    assert training
    for _, query, passage, _ in training:
        for text in (query, passage):
            assert normalized_text_key(text) not in heldout_texts
            tokens = words(text)
            assert not any(tuple(tokens[i : i + 13]) in heldout_ngrams for i in range(len(tokens) - 12))
    # And the small source holds out nothing, and every source's counts reconcile with reasons
    assert report["sources"]["tiny"]["heldout"]["queries"] == 0 and report["sources"]["tiny"]["kept"] == 40
    assert report["reconciled"]
    alpha_drops = report["sources"]["alpha"]["dropped"]
    assert alpha_drops[HELD_OUT] == report["sources"]["alpha"]["heldout"]["pairs"]
    assert alpha_drops["overlaps a held-out split: passage overlaps"] > 0
    assert report["sources"]["beta"]["dropped"]["overlaps a held-out split: query overlaps"] > 0
    assert report["kept"] == len(training)


def test_the_split_depends_on_seed_and_text_only_not_on_order_or_files(curated, tmp_path):
    # Given the same pairs shuffled and split over other files
    rows = [row for shard in sorted(curated.glob("*.parquet")) for row in pq.read_table(shard).to_pylist()]
    random.Random(1).shuffle(rows)
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    for part in range(3):
        _write_shard(shuffled / f"part{part}.parquet", rows[part::3])

    # When both are held out with one seed, and the original with another
    def split(pairs, name, seed=0):
        report = holdout(HoldoutConfig(pairs=[str(pairs)], output_dir=tmp_path / name, fraction=0.1, min_queries=100, seed=seed))
        return {s: sorted(load_beir(tmp_path / name / "heldout" / s).queries.values()) for s in ("alpha", "beta")}, report

    first, report = split(curated, "a")
    second, report_shuffled = split(shuffled, "b")
    other_seed, _ = split(curated, "c", seed=1)

    # Then the held-out queries are the same, and kept counts agree; another seed draws others
    assert first == second
    assert report["kept"] == report_shuffled["kept"]
    assert first != other_seed


def test_rerun_keeps_a_finished_split_and_cli_reports_it(curated, tmp_path):
    # Given a finished split
    output = tmp_path / "out"
    runner = CliRunner()
    first = runner.invoke(app, ["holdout", "-p", str(curated), "-o", str(output), "--fraction", "0.1", "--set", "min_queries=100"])
    assert first.exit_code == 0, first.output
    assert "held-out splits:" in first.output and "| alpha |" in first.output
    stamp = (output / "report.json").stat().st_mtime_ns

    # When it runs again with the same settings, Then nothing is rewritten
    second = runner.invoke(app, ["holdout", "-p", str(curated), "-o", str(output), "--fraction", "0.1", "--set", "min_queries=100"])
    assert second.exit_code == 0 and (output / "report.json").stat().st_mtime_ns == stamp

    # And a pairs path that holds no shard is a one-line error naming it
    missing = runner.invoke(app, ["holdout", "-p", str(tmp_path / "nothing"), "-o", str(tmp_path / "x")])
    assert missing.exit_code == 2 and "nothing" in missing.output and "Traceback" not in missing.output


def test_a_reply_chain_never_puts_a_query_in_its_own_split_as_an_unjudged_document(tmp_path):
    # Given reply-chain pairs: each comment is the passage of its parent and the query of its reply
    rng = random.Random(3)
    comments = [f"comment {i} " + _text(rng, 12) for i in range(301)]
    folder = tmp_path / "chain"
    folder.mkdir()
    _write_shard(folder / "reddit-00000.parquet", [{"query": a, "passage": b, "source": "reddit", "meta": "{}"} for a, b in zip(comments, comments[1:])])

    # When half of the queries are held out
    report = holdout(HoldoutConfig(pairs=[str(folder)], output_dir=tmp_path / "out", fraction=0.5, min_queries=10))

    # Then no held-out query is also a document of the split, the pairs left out are counted, and counts reconcile
    split = load_beir(tmp_path / "out/heldout/reddit")
    queries = {normalized_text_key(text) for text in split.queries.values()}
    assert not queries & {normalized_text_key(doc["text"]) for doc in split.corpus.values()}
    assert all(split.qrels[qid] for qid in split.queries)
    entry = report["sources"]["reddit"]
    assert entry["heldout"]["passage_is_a_query"] > 0
    assert entry["heldout"]["pairs"] + entry["heldout"]["passage_is_a_query"] == entry["dropped"][HELD_OUT]
    assert report["reconciled"] and "another held-out query" in (tmp_path / "out/report.md").read_text()


def test_a_rerun_with_other_settings_leaves_nothing_of_the_earlier_run(curated, tmp_path):
    # Given a folder holding a run with a large fraction, When a run with another fraction writes into it
    holdout(HoldoutConfig(pairs=[str(curated)], output_dir=tmp_path / "out", fraction=0.3, min_queries=10))
    again = holdout(HoldoutConfig(pairs=[str(curated)], output_dir=tmp_path / "out", fraction=0.05, min_queries=250))
    fresh = holdout(HoldoutConfig(pairs=[str(curated)], output_dir=tmp_path / "fresh", fraction=0.05, min_queries=250))

    # Then its splits, training shards and counts are those of a fresh folder (the small source's old split is gone)
    assert again["sources"] == fresh["sources"]
    assert _files(tmp_path / "out") == _files(tmp_path / "fresh")
    assert again["sources"]["tiny"]["note"] == "40 distinct queries < min_queries 250: nothing held out"
