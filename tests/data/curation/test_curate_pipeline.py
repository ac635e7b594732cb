"""The curate stage end to end: shards, report reconciliation, resume, engines, CLI and config errors."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from curation_dumps import STACK_ROWS, json_lines, mediawiki_xml, posts_xml, pushshift_records, write_lines, write_warc
from typer.testing import CliRunner

from e5kit.cli.app import app
from e5kit.config import load_config
from e5kit.data.curation import CurateConfig, curate
from e5kit.data.curation.planner import check_inputs
from e5kit.io.pairs import PAIR_COLUMNS

NEWS = [{"title": f"Headline number {i} about city council budget", "description": f"The city council met on day {i} and approved spending on parks, roads and the public library."} for i in range(30)]


@pytest.fixture
def dumps(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    submissions, comments = pushshift_records()
    write_lines(root / "RS_2020-01.zst", json_lines(submissions))
    write_lines(root / "RC_2020-01.gz", json_lines(comments))
    (root / "Posts.xml").write_bytes(posts_xml(STACK_ROWS, malformed=1))
    (root / "wiki.xml").write_bytes(mediawiki_xml())
    write_warc(root / "cc.warc.gz", wet=False)
    # two news shards, with an exact duplicate across them and a corrupt line
    write_lines(root / "news-a.jsonl", json_lines(NEWS[:20]) + [b"{broken"])
    write_lines(root / "news-b.jsonl.gz", json_lines(NEWS[15:] + [{"title": "Dichiarazione", "description": "Il consiglio comunale ha approvato il bilancio per le strade e la biblioteca pubblica."}]))
    return root


def config_for(dumps, output, **extra) -> CurateConfig:
    return CurateConfig.model_validate({
        "output_dir": str(output),
        "workers": 1,
        "sources": [
            {"type": "reddit", "paths": [str(dumps / "R[SC]_*")]},
            {"type": "stackexchange", "paths": [str(dumps / "Posts.xml")]},
            {"type": "wikipedia", "paths": [str(dumps / "wiki.xml")], "options": {"min_paragraph_words": 5}},
            {"type": "commoncrawl", "paths": [str(dumps / "cc.warc.gz")]},
            {"type": "news", "paths": [str(dumps / "news-*")], "filters": {"length": {"min_passage_words": 8}}},
        ],
        **extra,
    })


def read_pairs(output):
    return {path.name: pq.read_table(path).to_pylist() for path in sorted((output / "pairs").glob("*.parquet"))}


def test_report_counts_words_as_the_length_filter_measured_them(tmp_path):
    from e5kit.data.text import words

    # Given one news pair whose words (\w+ tokens, the length filter's unit) outnumber its whitespace tokens
    query = "Co-founder's e-mail: U.S. news"
    passage = "The U.S.-based e-mail service's co-founder said it's well-known: state-of-the-art."
    assert (len(words(query)), len(words(passage))) == (8, 19) and (len(query.split()), len(passage.split())) == (4, 9)
    write_lines(tmp_path / "news.jsonl", json_lines([{"title": query, "description": passage}]))
    # When curated with the passage bounds pinned at exactly its word count (as the length filter counts)
    config = CurateConfig.model_validate({
        "output_dir": str(tmp_path / "out"),
        "workers": 1,
        "sources": [{"type": "news", "paths": [str(tmp_path / "news.jsonl")]}],
        "filters": {"language": {"enabled": False}, "length": {"min_passage_words": 19, "max_passage_words": 19}},
    })
    report = curate(config)
    # Then the pair passed the length filter, and the report's lengths are the filter's counts
    news = report["sources"]["news"]
    assert news["kept"] == 1
    assert news["query_words"]["max"] == 8 and news["passage_words"]["max"] == 19


def test_curate_writes_shards_and_a_reconciled_report(dumps, tmp_path):
    # Given five sources in raw formats
    output = tmp_path / "out"
    # When curated
    report = curate(config_for(dumps, output))
    # Then pair shards follow the contract and the report reconciles per source
    shards = read_pairs(output)
    assert set(shards) == {"reddit-00000.parquet", "stackexchange-00000.parquet", "wikipedia-00000.parquet", "commoncrawl-00000.parquet", "news-00000.parquet"}
    schema = pq.read_schema(output / "pairs" / "news-00000.parquet")
    assert schema.names == list(PAIR_COLUMNS) and all(str(t) == "string" for t in schema.types)
    assert report["reconciled"]
    for name, entry in report["sources"].items():
        assert entry["read"] == entry["kept"] + sum(entry["dropped"].values()), name
        assert entry["kept"] == len(shards[f"{name}-00000.parquet"])
        assert (output / entry["histogram"]).stat().st_size > 0
    news = report["sources"]["news"]
    assert news["dropped"]["exact_dedup: exact duplicate"] == 5
    assert news["dropped"]["reader: corrupt JSON line"] == 1
    assert news["dropped"]["language: passage not in en"] == 1
    assert news["kept"] == 30
    # And cleaning ran on web text; meta records provenance
    assert all("Sign in" not in row["passage"] for row in shards["commoncrawl-00000.parquet"])
    meta = json.loads(shards["stackexchange-00000.parquet"][0]["meta"])
    assert meta["file"].endswith("Posts.xml") and meta["question_id"] == "1"
    assert "| news |" in (output / "report.md").read_text()


def test_parallel_workers_and_resume_give_identical_output(dumps, tmp_path):
    # Given a run with one worker
    first = curate(config_for(dumps, tmp_path / "serial"))
    # When run with two worker processes, then rerun (resume) with one shard's marker removed
    parallel_config = config_for(dumps, tmp_path / "parallel", workers=2)
    curate(parallel_config)
    (tmp_path / "parallel" / "work" / "news-00001.done.json").unlink()
    resumed = curate(parallel_config)
    # Then outputs are identical and only the unfinished shard was processed again
    assert read_pairs(tmp_path / "serial") == read_pairs(tmp_path / "parallel")
    assert resumed["resumed_shards"] == resumed["shards"] - 1
    assert first["sources"] == resumed["sources"]


def test_symmetric_pairs_get_a_seeded_random_query_role(tmp_path):
    rows = [{"a": f"left text number {i} here", "b": f"right text number {i} there"} for i in range(40)]
    write_lines(tmp_path / "sym.jsonl", json_lines(rows))
    config = {"output_dir": str(tmp_path / "o"), "workers": 1, "sources": [{"type": "generic", "paths": [str(tmp_path / "sym.jsonl")],
              "options": {"query_column": "a", "passage_column": "b", "symmetric": True}}], "filters": {"near_dedup": {"enabled": False}, "language": {"enabled": False}}}
    curate(CurateConfig.model_validate(config))
    queries = [row["query"] for row in read_pairs(tmp_path / "o")["generic-00000.parquet"]]
    swapped = sum(q.startswith("right") for q in queries)
    assert 5 < swapped < 35  # a fair coin, not a fixed side


def test_decontamination_drops_pairs_overlapping_an_eval_folder(tmp_path):
    folder = tmp_path / "beir" / "toy"
    folder.mkdir(parents=True)
    leaked = "the quick brown fox jumps over the lazy dog near the river bank today"
    (folder / "corpus.jsonl").write_text(json.dumps({"_id": "1", "title": "", "text": leaked}) + "\n")
    rows = [{"title": "Leaked headline", "text": f"Copied: {leaked}."}, {"title": "Clean headline", "text": "An original passage about the river bank and its birds in spring."}]
    write_lines(tmp_path / "n.jsonl", json_lines(rows))
    config = {"output_dir": str(tmp_path / "o"), "workers": 1, "sources": [{"type": "news", "paths": [str(tmp_path / "n.jsonl")]}],
              "filters": {"decontaminate": {"eval_paths": [str(tmp_path / "beir")], "ngram": 13}}}
    report = curate(CurateConfig.model_validate(config))
    assert report["sources"]["news"]["dropped"] == {"decontaminate: passage overlaps evaluation data": 1}
    assert report["sources"]["news"]["kept"] == 1


def test_ray_engine_gives_identical_output(dumps, tmp_path):
    pytest.importorskip("ray")
    local = config_for(dumps, tmp_path / "local")
    curate(local)
    curate(config_for(dumps, tmp_path / "ray", engine="ray", workers=2))
    assert read_pairs(tmp_path / "local") == read_pairs(tmp_path / "ray")


def test_config_errors_name_the_field(dumps, tmp_path):
    base = ["output_dir=" + str(tmp_path / "o"), f"sources=[{{type: news, paths: ['{dumps}/news-a.jsonl']}}]"]
    with pytest.raises(ValueError, match="sources.0.options: bogus"):
        load_config(CurateConfig, None, base + ["sources.0.options.bogus=1"])
    with pytest.raises(ValueError, match="sources.0.paths: .*nope"):
        check_inputs(load_config(CurateConfig, None, base + ["sources.0.paths=[/nope/x.jsonl]"]))  # the paths are the planner's to check
    with pytest.raises(ValueError, match="filters.length.min_query_words"):
        load_config(CurateConfig, None, base + ["filters.length.min_query_words=abc"])
    with pytest.raises(ValueError, match="expected key=value"):
        load_config(CurateConfig, None, base + ["workers"])


def test_cli_curate_runs_from_a_yaml_config(dumps, tmp_path):
    config = tmp_path / "curate.yaml"
    config.write_text(f"output_dir: {tmp_path / 'cli'}\nworkers: 1\nsources:\n  - type: news\n    paths: ['{dumps}/news-*']\n")
    result = CliRunner().invoke(app, ["curate", "--config", str(config), "--set", "shard_size=10"])
    assert result.exit_code == 0, result.output
    assert "kept 30" in result.output
    assert sorted(p.name for p in (tmp_path / "cli" / "pairs").iterdir()) == ["news-00000.parquet", "news-00001.parquet", "news-00002.parquet"]
    bad = CliRunner().invoke(app, ["curate", "--config", str(config), "--set", "engine=spark"])
    assert bad.exit_code == 2 and "engine" in bad.output


@pytest.mark.shared
def test_curate_real_samples(shared_dir, tmp_path):
    raw = shared_dir / "data" / "raw"
    config = CurateConfig.model_validate({
        "output_dir": str(tmp_path / "real"), "workers": 2,
        "sources": [{"type": "stackexchange", "paths": [str(raw / "stackexchange" / "question_answer_pairs.jsonl.gz")]},
                    {"type": "arxiv", "paths": [str(raw / "arxiv" / "title_abstract.jsonl.gz")]}],
        "filters": {"decontaminate": {"eval_paths": [str(shared_dir / "data" / "beir" / "scifact" / "queries.jsonl.gz")]}},
    })
    report = curate(config)
    assert report["reconciled"]
    assert report["sources"]["arxiv"]["read"] == 2993 and report["sources"]["arxiv"]["kept"] > 2900
    assert report["sources"]["stackexchange"]["kept"] > 1200


def test_config_validation_has_no_side_effects_the_planner_checks_inputs(tmp_path, monkeypatch):
    # Given a config naming a missing input file and a KenLM model (kenlm cannot even be imported)
    monkeypatch.setitem(__import__("sys").modules, "kenlm", None)
    tree = {"output_dir": str(tmp_path / "o"), "sources": [{"type": "news", "paths": [str(tmp_path / "missing-*.jsonl")]}],
            "filters": {"perplexity": {"model_path": str(tmp_path / "lm.arpa")}}}
    # When validated, Then nothing is globbed or loaded: the settings are valid as settings
    config = CurateConfig.model_validate(tree)
    # And curate refuses it before any work, naming the field and the path
    with pytest.raises(ValueError, match=r"sources\.0\.paths: .*missing-\*\.jsonl"):
        curate(config)
    assert not (tmp_path / "o").exists()
