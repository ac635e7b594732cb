"""The quickstart's offline corpus: standard-library documentation as weak pairs plus a held-out retrieval split.

Each documented object gives a pair like E5's Wikipedia source, (name + summary line, body): the
query side names the object and says what it does, the passage side is the rest of its docstring.
A seeded random subset of objects is held out as a BEIR-format retrieval task: their query sides
become test queries, and every body (held-out or not) is in the corpus, so the model must find the
right body among all of them. The held-out pairs are still written to the raw pairs file: removing
them is the curation stage's decontamination step, which is what the quickstart demonstrates.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from e5kit.data.readers.pydoc import DocRecord, iter_module_docs, iter_topic_docs


@dataclass(frozen=True)
class StdlibCorpus:
    """Where the corpus builder wrote its files.

    Attributes:
        pairs_path: JSONL of all (query, passage, source, meta) pairs, held-out ones included.
        eval_dir: BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv) of the held-out split.
        heldout_path: JSONL of the held-out queries and their passages, the decontamination reference.
        pairs: Number of pairs written.
        heldout: Number of held-out queries.
    """

    pairs_path: Path
    eval_dir: Path
    heldout_path: Path
    pairs: int
    heldout: int


@lru_cache(maxsize=4)
def usable_records(min_body_words: int = 8) -> tuple[DocRecord, ...]:
    """Documented objects whose docstring has a body of at least ``min_body_words`` words, one per body.

    Cached: parsing the whole standard library takes seconds.
    """
    seen_bodies: set[str] = set()
    records = []
    for record in [*iter_module_docs(), *iter_topic_docs()]:
        body = record.body
        if len(body.split()) >= min_body_words and body not in seen_bodies:
            seen_bodies.add(body)
            records.append(record)
    return tuple(records)


def build_stdlib_corpus(
    out_dir: str | Path, *, heldout: int = 300, min_body_words: int = 8, seed: int = 13, limit: int | None = None
) -> StdlibCorpus:
    """Write the pairs file and the held-out BEIR split under ``out_dir``.

    Args:
        out_dir: Folder to write into (created).
        heldout: Number of objects held out as test queries.
        min_body_words: Objects with shorter docstring bodies are not used.
        seed: Seed of the held-out draw (and of the subset drawn when ``limit`` is set).
        limit: Use a seeded random subset of this many objects (small test runs); None = all.
    """
    out_dir = Path(out_dir)
    records = list(usable_records(min_body_words))
    if limit is not None and limit < len(records):
        chosen = set(random.Random(seed).sample(range(len(records)), limit))
        records = [record for index, record in enumerate(records) if index in chosen]
    if heldout >= len(records):
        raise ValueError(f"asked to hold out {heldout} of only {len(records)} usable documented objects")
    heldout_ids = {r.doc_id for r in random.Random(seed).sample(records, heldout)}

    eval_dir = out_dir / "eval"
    (eval_dir / "qrels").mkdir(parents=True, exist_ok=True)
    pairs_path = out_dir / "pairs.jsonl"
    heldout_path = out_dir / "heldout.jsonl"
    with (
        pairs_path.open("w", encoding="utf-8") as pairs,
        (eval_dir / "corpus.jsonl").open("w", encoding="utf-8") as corpus,
        (eval_dir / "queries.jsonl").open("w", encoding="utf-8") as queries,
        (eval_dir / "qrels" / "test.tsv").open("w", encoding="utf-8") as qrels,
        heldout_path.open("w", encoding="utf-8") as reference,
    ):
        qrels.write("query-id\tcorpus-id\tscore\n")
        for record in records:
            meta = json.dumps({"doc_id": record.doc_id, "kind": record.kind})
            pairs.write(json.dumps({"query": record.title, "passage": record.body, "source": f"pydoc-{record.kind}", "meta": meta}) + "\n")
            corpus.write(json.dumps({"_id": record.doc_id, "title": "", "text": record.body}) + "\n")
            if record.doc_id in heldout_ids:
                query_id = f"q:{record.doc_id}"
                queries.write(json.dumps({"_id": query_id, "text": record.title}) + "\n")
                qrels.write(f"{query_id}\t{record.doc_id}\t1\n")
                reference.write(json.dumps({"query": record.title, "text": record.body}) + "\n")
    return StdlibCorpus(pairs_path, eval_dir, heldout_path, pairs=len(records), heldout=heldout)
