"""Teacher scores for fine-tuning: a cross-encoder re-ranker or a bi-encoder scores every (query, candidate).

``score_file`` reads FlagEmbedding JSONL (``{query, pos, neg, ...}``, e.g. from ``e5kit mine-negatives``)
and writes the same records with ``pos_scores`` and ``neg_scores`` added. Pairs are scored in batches
across records; records are written in blocks of ``BLOCK_RECORDS`` to ``OUT.partial``, which is renamed
onto ``OUT`` only when every record is scored, so ``OUT`` is never a half output that fine-tuning would
take as complete. A killed run resumes (``score_file`` appends to the partial file and skips the records
already in it, after checking that they are the input's first records); a finished ``OUT`` is never
resumed from: :class:`TeacherStage` (``e5kit score-teacher``, ``e5kit.stage``) writes ``OUT.stats.json``
last, skips a rerun with the same settings and input, and resumes a partial file only when the killed
run was started with the same settings and input (else the partial file is removed first). A resumed run keeps only the
whole blocks a killed one wrote and scores the rest in the same blocks, so its output is the
uninterrupted run's, byte for byte (a batch's padding would otherwise change the last bits of a score).

Empty passages (no visible text, ``e5kit.io.text.has_visible_text``) follow the corpus rule every stage
shares (``e5kit.io.beir``): never sent to the teacher, scored 0 (the cosine of an all-zero
embedding), kept in their record, and counted in the report (``empty_passages``).

A bi-encoder teacher first embeds the query and the passages of every usable record into on-disk
stores under ``OUT.embeddings/`` (``e5kit.retrieval.store``: blocks of ``block_rows`` texts, resumed block by
block, data-parallel with ``engine: torchrun | ray``, the same bytes with each; the texts are staged
there as Parquet so any worker reads any block), and a record's scores are the dot products of its
stored rows, so the output does not depend on the engine, the workers or where a run was killed. Under
torchrun every rank embeds its share and rank 0 writes. A cross-encoder scores each (query, passage)
jointly, so there are no embeddings to store: under torchrun rank ``r`` of ``W`` scores the record
blocks ``b % W == r`` into files of their own (``OUT.work/scored-*/``, each written whole, kept by a
killed run and skipped when it reruns), and after a barrier rank 0 appends them, in input order, to
the partial file; the blocks and their batches are those one process scores, so the output is its
bytes. (Ray is for embeddings only.)

Example:
    >>> teacher = load_teacher("cross-encoder-dir")                        # doctest: +SKIP
    >>> score_file(teacher, "mined.jsonl", "scored.jsonl")                 # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import torch
from pydantic import ConfigDict, Field

from e5kit.data.finetune_formats import FinetuneExample, RecordIssues, invalid_reason
from e5kit.io.columns import ParquetColumnBlocks
from e5kit.io.files import AtomicFile, InputFormatError, remove_stale_temporaries
from e5kit.io.tables import iter_jsonl
from e5kit.io.text import has_visible_text
from e5kit.processes import join_process_group
from e5kit.progress import progress_bar
from e5kit.retrieval.engines import EncoderSpec, StoreEmbedding, embed_store, torchrun_rank
from e5kit.retrieval.store import EmbeddingStore, StoreLayout, open_or_replace_store, store_fingerprint
from e5kit.stage import OneFileStage, local_model

logger = logging.getLogger(__name__)

#: Records scored (and written) together; the resume granularity.
BLOCK_RECORDS = 64
#: Suffix of the file an unfinished run writes (``OUT.partial``); the output's own name appears only when complete.
PARTIAL_SUFFIX = ".partial"


class Teacher(Protocol):
    """Anything that scores (query, passage) pairs."""

    name: str

    def score_pairs(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        """(n,) float scores of pair i = (queries[i], passages[i]); higher = more relevant."""


class CrossEncoderTeacher:
    """A ``AutoModelForSequenceClassification`` re-ranker reading "query [SEP] passage".

    The score is the single logit of a 1-label model, or the last label's logit ("relevant") otherwise.

    Args:
        model: The sequence-classification model.
        tokenizer: Its tokenizer.
        batch_size: Pairs per forward pass.
        max_length: Token limit of a pair.
        name: Shown in reports.
    """

    def __init__(self, model, tokenizer, *, batch_size: int = 32, max_length: int = 512, name: str = "cross-encoder") -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = min(max_length, getattr(model.config, "max_position_embeddings", max_length) or max_length)
        self.name = name

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None, **options) -> CrossEncoderTeacher:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from e5kit.encoder import resolve_device
        from e5kit.hub import resolve_model_dir

        folder = resolve_model_dir(path)
        model = AutoModelForSequenceClassification.from_pretrained(folder).to(resolve_device(device))
        return cls(model, AutoTokenizer.from_pretrained(folder), name=str(path), **options)

    @torch.inference_mode()
    def score_pairs(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        scores = np.empty(len(queries), dtype=np.float32)
        device = next(self.model.parameters()).device
        for start in range(0, len(queries), self.batch_size):
            stop = start + self.batch_size
            features = self.tokenizer(
                list(queries[start:stop]), list(passages[start:stop]), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            logits = self.model(**{name: tensor.to(device) for name, tensor in features.items()}).logits  # (batch, labels)
            scores[start:stop] = logits[:, -1].float().cpu().numpy()
        return scores


class BiEncoderTeacher:
    """A (stronger) bi-encoder as teacher: the score is the encoder's similarity of query and passage
    (cosine unless it was loaded with ``similarity_fn_name="dot"``).

    Passages are embedded by ``encode_corpus``: an empty passage gets an all-zero row, so cosine 0.

    Args:
        encoder: An ``e5kit.encoder.Encoder``.
        batch_size: Texts per forward pass.
        name: Shown in reports.
        spec: How Ray actors load the same encoder (``score_file`` with ``engine="ray"`` needs it;
            ``load_teacher`` sets it).
    """

    def __init__(self, encoder, *, batch_size: int = 32, name: str = "bi-encoder", spec: EncoderSpec | None = None) -> None:
        self.encoder = encoder
        self.batch_size = batch_size
        self.name = name
        self.spec = spec

    def score_pairs(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        from e5kit.retrieval.dense import encode_corpus

        unique_queries = list(dict.fromkeys(queries))  # a block's pairs share few distinct queries
        row = {query: index for index, query in enumerate(unique_queries)}
        query_embeddings = self.encoder.encode(unique_queries, role="query", batch_size=self.batch_size)
        passage_embeddings = encode_corpus(self.encoder, list(passages), role="passage", batch_size=self.batch_size).embeddings
        rows = query_embeddings[[row[query] for query in queries]]  # (n, dim)
        return np.einsum("nd,nd->n", rows, passage_embeddings).astype(np.float32)


def teacher_kind(path: str | Path) -> str:
    """"cross-encoder" when the model's config names a *ForSequenceClassification architecture, else "bi-encoder"."""
    from e5kit.hub import resolve_model_dir

    config_path = resolve_model_dir(path) / "config.json"
    architectures = []
    if config_path.is_file():
        architectures = json.loads(config_path.read_text(encoding="utf-8")).get("architectures") or []
    return "cross-encoder" if any(name.endswith("ForSequenceClassification") for name in architectures) else "bi-encoder"


def load_teacher(
    path: str | Path,
    kind: Literal["auto", "cross-encoder", "bi-encoder"] = "auto",
    *,
    batch_size: int = 32,
    max_length: int | None = None,
    device: str | None = None,
    similarity_fn_name: str = "cosine",
) -> Teacher:
    """Load a teacher; ``kind="auto"`` picks the cross-encoder for sequence-classification checkpoints.

    A bi-encoder scores with ``similarity_fn_name``: "cosine" (E5, whatever the model ships) or "dot".
    """
    kind = teacher_kind(path) if kind == "auto" else kind
    if kind == "cross-encoder":
        return CrossEncoderTeacher.load(path, device=device, batch_size=batch_size, max_length=max_length or 512)
    if kind == "bi-encoder":
        spec = EncoderSpec(str(path), max_length=max_length, similarity_fn_name=similarity_fn_name, device=device)
        return BiEncoderTeacher(spec.load(), batch_size=batch_size, name=str(path), spec=spec)
    raise ValueError(f"kind must be auto, cross-encoder or bi-encoder, got {kind!r}")


def _written_records(out_path: Path) -> tuple[list[str], list[int]]:
    """The queries of the complete records in ``out_path``, and the byte offset where each ends.

    Raises:
        InputFormatError: a complete line that is not a scored record, naming it.
    """
    if not out_path.is_file():
        return [], []
    # Not e5kit.io.tables: resuming needs each record's byte offset in this uncompressed file (the partial
    # file is cut back to a whole block), which a record reader does not give.
    data = out_path.read_bytes()
    queries, ends, end = [], [], 0
    for number, line in enumerate(data[: data.rfind(b"\n") + 1].splitlines(keepends=True), start=1):
        try:
            queries.append(json.loads(line)["query"])
        except (ValueError, KeyError, TypeError):
            raise InputFormatError(
                f"{out_path}:{number}: not a scored record; the output belongs to something else (use a new output file or --force)"
            ) from None
        end += len(line)
        ends.append(end)
    return queries, ends


def partial_path(out_path: str | Path) -> Path:
    """Where ``score_file`` writes ``out_path`` until it is complete: ``OUT.partial`` beside it."""
    out_path = Path(out_path)
    return out_path.with_name(f"{out_path.name}{PARTIAL_SUFFIX}")


def work_folder(out_path: str | Path) -> Path:
    """Where scoring ``out_path`` keeps its work until the output is finished: ``OUT.work/`` (a bi-encoder's
    staged texts and embedding stores, a cross-encoder's blocks scored by torchrun ranks)."""
    return Path(f"{out_path}.work")


def score_file(
    teacher: Teacher,
    in_path: str | Path,
    out_path: str | Path,
    *,
    resume: bool = True,
    show_progress: bool = True,
    embedding: StoreEmbedding | None = None,
    keep_embeddings: bool = False,
) -> dict[str, Any]:
    """Add teacher ``pos_scores``/``neg_scores`` to every usable record of a FlagEmbedding JSONL file.

    The records are written to :func:`partial_path` and renamed onto ``out_path`` only when every record
    is scored, so ``out_path`` is always a finished output (a previous one stays until the new one is).

    Args:
        teacher: The scorer; a ``BiEncoderTeacher`` embeds through stores (module docstring).
        in_path: Input JSONL (``query``, ``pos``, ``neg``; other fields are kept).
        out_path: Output JSONL.
        resume: Keep the whole blocks of records already written to the partial file a killed run left
            and score only the rest (the records of an unfinished block, once checked, are scored again
            with their block). A finished ``out_path`` is never resumed from (it is replaced).
        show_progress: Progress bar over records.
        embedding: Engine, Ray workers and block rows (default: local, ``DEFAULT_BLOCK_ROWS``). The
            engine: "local"; "torchrun" (a bi-encoder: ranks embed their share of the blocks; a
            cross-encoder: ranks score their share of the record blocks); "ray" (bi-encoder only: a Ray
            Data actor pool embeds). Rank 0 writes; the output is the same with each. ``block_rows``
            is a bi-encoder's texts per embedding block (the embeddings in memory at once).
        keep_embeddings: Keep ``OUT.work/`` after the run.

    Returns:
        Report: records scored now, already done (kept), pairs scored by the teacher, empty passages
        (scored 0 without the teacher), skipped records by reason. {} on a torchrun rank other than 0
        (it only embeds or scores its share).

    Raises:
        InputFormatError: the partial file does not start with the input's records (named line); it
            is left as it was.
        ValueError: ``engine`` ray with a cross-encoder, or without the bi-encoder teacher's ``spec``.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    embedding = embedding or StoreEmbedding()
    engine = embedding.engine
    partial = written = partial_path(out_path)
    done, ends = _written_records(written) if resume else ([], [])
    kept = len(done) - len(done) % BLOCK_RECORDS
    if len(done) > kept:
        logger.warning("%s: the last %d records form an unfinished block; they are checked and scored again", written, len(done) - kept)
    stored = parts = None  # a bi-encoder's stored embeddings; the folder of a cross-encoder's blocks under torchrun
    rank, world = 0, 1
    if isinstance(teacher, BiEncoderTeacher):
        if engine == "ray" and teacher.spec is None:
            raise ValueError("engine ray: the teacher has no EncoderSpec for the actors to load (load it with load_teacher)")
        stored = _StoredScores(*_embed_records(teacher, in_path, work_folder(out_path), embedding))
        if engine == "torchrun" and torchrun_rank()[0] != 0:
            return {}  # this rank embedded its share; rank 0 scores and writes
    elif engine == "torchrun":
        import torch.distributed as dist

        join_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        # Named by what decides the blocks' bytes, so a rerun reuses them and nothing else does.
        parts = work_folder(out_path) / "scored-{}".format(store_fingerprint({
            "teacher": teacher.name, "max_length": getattr(teacher, "max_length", None), "batch_size": getattr(teacher, "batch_size", None),
            "input": [str(in_path), in_path.stat().st_size, in_path.stat().st_mtime_ns], "block_records": BLOCK_RECORDS,
        }))
        parts.mkdir(parents=True, exist_ok=True)
    elif engine != "local":
        raise ValueError(f"engine {engine}: a cross-encoder scores each pair jointly, with no embeddings to hand to Ray; use local or torchrun")
    issues = RecordIssues()
    matched = scored = pairs = empty = number = 0
    handle = None

    def writer():
        """The partial file, opened at the first write, once every kept record was checked: it starts
        as the whole blocks already written, the rest cut off."""
        nonlocal handle
        if handle is None:
            handle = partial.open("a" if resume else "w", encoding="utf-8")
            handle.truncate(ends[kept - 1] if kept else 0)
        return handle

    def part(number: int) -> Path:
        return parts / f"block-{kept // BLOCK_RECORDS + number:06d}.jsonl"

    def scored_lines(passages: list[str], visible: list[int]) -> str:
        """The block's records with their scores, as JSONL."""
        queries = [r["query"] for r in block for _ in r["pos"] + r["neg"]]
        if stored is not None:
            scored_visible = stored.next_block([len(r["pos"]) + len(r["neg"]) for r in block])[visible].tolist()
        else:
            scored_visible = teacher.score_pairs([queries[i] for i in visible], [passages[i] for i in visible]).tolist() if visible else []
        if len(scored_visible) != len(visible):
            first = block[0].get("query_id", block[0]["query"])
            raise ValueError(f"teacher {teacher.name} returned {len(scored_visible)} scores for {len(visible)} pairs (block starting at record {first!r})")
        scores = [0.0] * len(passages)  # empty passages: never sent to the teacher, score 0
        for i, score in zip(visible, scored_visible):
            scores[i] = score
        lines, position = [], 0
        for record in block:
            record["pos_scores"] = scores[position : position + len(record["pos"])]
            position += len(record["pos"])
            record["neg_scores"] = scores[position : position + len(record["neg"])]
            position += len(record["neg"])
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        return "".join(lines)

    def flush() -> None:
        nonlocal scored, pairs, empty, number
        passages = [text for r in block for text in r["pos"] + r["neg"]]
        visible = [i for i, text in enumerate(passages) if has_visible_text(text)]
        if parts is None:
            writer().write(scored_lines(passages, visible))
            writer().flush()
            os.fsync(writer().fileno())
        elif number % world == rank and not (resume and part(number).exists()):
            with AtomicFile(part(number)) as staged:
                staged.temporary.write_text(scored_lines(passages, visible), encoding="utf-8")
        number += 1
        scored += len(block)
        pairs += len(visible)
        empty += len(passages) - len(visible)
        progress.update(len(block))
        block.clear()

    out_path.parent.mkdir(parents=True, exist_ok=True)
    block: list[dict[str, Any]] = []
    try:
        with progress_bar(desc="teacher scores", unit="record", show=show_progress) as progress:
            for name, record in _usable_records(in_path, issues):
                if matched < len(done):
                    if done[matched] != record["query"]:
                        raise InputFormatError(
                            f"{written}:{matched + 1}: holds query {done[matched]!r} but {name} is {record['query']!r}; "
                            "the output belongs to another input (use a new output file or --force)"
                        )
                    matched += 1
                    if matched <= kept:
                        if stored is not None:
                            stored.skip(len(record["pos"]) + len(record["neg"]))
                        progress.update(1)
                        continue
                block.append(record)  # a new record, or one of an unfinished block (scored again)
                if len(block) == BLOCK_RECORDS:
                    flush()
            if matched < len(done):
                raise InputFormatError(f"{written}: holds {len(done)} records but {in_path} has only {matched} usable ones")
            if block:
                flush()
            if parts is not None:
                dist.barrier()  # every rank's blocks are on disk
                if rank != 0:
                    return {}
                for done_block in range(number):
                    writer().write(part(done_block).read_text(encoding="utf-8"))
                writer().flush()
                os.fsync(writer().fileno())
            writer().close()  # also when nothing was left to score: a killed run's partial file is finished now
    finally:
        if handle is not None:
            handle.close()
    os.replace(partial, out_path)
    if not keep_embeddings:
        shutil.rmtree(work_folder(out_path), ignore_errors=True)
    return {
        "teacher": teacher.name,
        "scored": scored,
        "already_done": kept,
        "pairs_scored": pairs,
        "empty_passages": empty,
        "skipped": issues.summary(),
    }


class TeacherConfig(StoreEmbedding):
    """How ``e5kit score-teacher`` scores a mined file (with ``StoreEmbedding``'s engine, workers and
    block_rows: a bi-encoder's texts per embedding block, kept in OUT.work/ until OUT is written).

    Attributes:
        teacher: Cross-encoder (sequence-classification checkpoint) or bi-encoder model directory.
        input: FlagEmbedding JSONL {query, pos, neg, ...} (e.g. from mine-negatives).
        out: Output JSONL: the input records with pos_scores and neg_scores added; OUT.stats.json gets the report.
        kind: "auto": cross-encoder when the checkpoint is *ForSequenceClassification, else bi-encoder (cosine).
        batch_size: Pairs (cross-encoder) or texts (bi-encoder) per forward pass.
        max_length: Token limit (None: 512 for a cross-encoder pair, the model's own for a bi-encoder).
        device: Torch device (None: cuda when present).
        similarity_fn_name: Bi-encoder score: "cosine" (E5, whatever the model ships) or "dot" (raw dot products).
        keep_embeddings: Keep ``OUT.work/`` after the run.
    """

    model_config = ConfigDict(extra="forbid")

    teacher: str
    input: Path
    out: Path
    kind: Literal["auto", "cross-encoder", "bi-encoder"] = "auto"
    batch_size: int = Field(default=32, ge=1)
    max_length: int | None = Field(default=None, ge=8)
    device: str | None = None
    similarity_fn_name: Literal["cosine", "dot"] = "cosine"
    keep_embeddings: bool = False


class TeacherStage(OneFileStage[TeacherConfig]):
    """Teacher scoring as a stage (``e5kit.stage``): reads the mined file and the teacher, writes ``out``
    with ``OUT.stats.json`` as its marker; a killed run resumes its partial file block by block (and a
    bi-encoder's embedding stores) when it was started with the same settings and input."""

    name = "score-teacher"
    config_class = TeacherConfig
    # Who scores the blocks, never what is written: the output is one process's bytes with each (tested).
    runtime_fields: ClassVar[frozenset[str]] = frozenset({"engine", "workers", "device", "keep_embeddings"})
    resumable = True

    @property
    def output_file(self) -> Path:
        return Path(self.config.out)

    def inputs(self) -> list[Path]:
        return [self.config.input, *local_model(self.config.teacher)]

    def outputs(self) -> dict[str, Path]:
        return {"scores": self.output_file}

    def discard_partial(self) -> None:
        # Written under other settings or input: never continued (the embedding stores are named by
        # their model and input, so they stay).
        partial_path(self.config.out).unlink(missing_ok=True)
        for folder in work_folder(self.config.out).glob("scored-*"):
            shutil.rmtree(folder, ignore_errors=True)

    def execute(self, log: Callable[[str], None]) -> dict[str, Any]:
        config = self.config
        scorer = load_teacher(config.teacher, config.kind, batch_size=config.batch_size, max_length=config.max_length, device=config.device,
                              similarity_fn_name=config.similarity_fn_name)
        embedding = StoreEmbedding(engine=config.engine, workers=config.workers, block_rows=config.block_rows)
        return score_file(scorer, config.input, config.out, resume=self.resuming, embedding=embedding, keep_embeddings=config.keep_embeddings)


def _usable_records(in_path: Path, issues: RecordIssues | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name "file:line", record without old scores) of each record that can be scored, in file order;
    the others are counted in ``issues``."""
    for line_number, record in iter_jsonl(in_path):
        record.pop("pos_scores", None)
        record.pop("neg_scores", None)
        reason = _record_problem(record)
        if reason is None:
            yield f"{in_path}:{line_number}", record
        elif issues is not None:
            issues.add(reason, f"{in_path}:{line_number}")


def _embed_records(teacher: BiEncoderTeacher, in_path: Path, folder: Path, embedding: StoreEmbedding) -> tuple[EmbeddingStore, EmbeddingStore]:
    """Stores of the queries (one row per usable record) and of their passages (one row per pair,
    positives then negatives, in record order), embedded with ``embedding``'s engine.

    Every usable record is embedded, also those a resumed run keeps: a record's embeddings then never
    depend on where a run was killed (a block starting elsewhere would batch, and pad, its texts
    otherwise), and a run killed while scoring resumes without embedding anything again."""
    encoder = teacher.encoder
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder)
    identity = {
        "encoder": encoder.fingerprint(),
        "max_length": encoder.max_length,
        "normalize": encoder.normalize,
        "input": [str(in_path), in_path.stat().st_size, in_path.stat().st_mtime_ns],
    }
    texts = _staged_texts(in_path, folder, embedding.block_rows)
    stores = []
    for role, column in (("query", texts["query"]), ("passage", texts["passage"])):
        fingerprint = store_fingerprint({**identity, "role": role})
        layout = StoreLayout(rows=column.rows, dimension=encoder.dimension, block_rows=embedding.block_rows, dtype="float32", fingerprint=fingerprint)
        store = open_or_replace_store(folder / role, layout)
        embed_store(teacher.spec, column, store, role=role, engine=embedding.engine, workers=embedding.workers, batch_size=teacher.batch_size, encoder=encoder)
        stores.append(store)
    return stores[0], stores[1]


def _staged_texts(in_path: Path, folder: Path, block_rows: int) -> dict[str, ParquetColumnBlocks]:
    """The usable records' queries and passages as Parquet columns (``folder/{query,passage}.parquet``),
    written in row groups of ``block_rows``: any worker reads any block without parsing the JSONL from the start."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("text", pa.string())])
    targets = {role: folder / f"{role}.parquet" for role in ("query", "passage")}
    with AtomicFile(targets["query"]) as queries, AtomicFile(targets["passage"]) as passages, \
            pq.ParquetWriter(queries.temporary, schema) as query_writer, pq.ParquetWriter(passages.temporary, schema) as passage_writer:
        buffers: dict[str, list[str]] = {"query": [], "passage": []}
        writers = {"query": query_writer, "passage": passage_writer}

        def emit(role: str, final: bool = False) -> None:
            while len(buffers[role]) >= block_rows or (final and buffers[role]):
                writers[role].write_table(pa.table({"text": buffers[role][:block_rows]}, schema=schema))
                del buffers[role][:block_rows]

        for _, record in _usable_records(in_path):
            buffers["query"].append(record["query"])
            buffers["passage"] += record["pos"] + record["neg"]
            emit("query")
            emit("passage")
        emit("query", final=True)
        emit("passage", final=True)
    return {role: ParquetColumnBlocks([target], "text", block_rows) for role, target in targets.items()}


class _StoredScores:
    """Scores of consecutive records from the stores, read in row order with one block of each store in memory."""

    def __init__(self, queries: EmbeddingStore, passages: EmbeddingStore) -> None:
        self.queries, self.passages = _RowCursor(queries), _RowCursor(passages)

    def next_block(self, pairs_per_record: list[int]) -> np.ndarray:
        """(sum(pairs_per_record),) float32 scores of the next records' pairs (an empty passage's row is zero)."""
        queries = np.repeat(self.queries.take(len(pairs_per_record)), pairs_per_record, axis=0)  # (pairs, dim)
        return np.einsum("nd,nd->n", queries, self.passages.take(sum(pairs_per_record))).astype(np.float32)

    def skip(self, pairs: int) -> None:
        """Pass over one record (of ``pairs`` pairs) that an earlier run scored."""
        self.queries.row += 1
        self.passages.row += pairs


class _RowCursor:
    """A store's rows handed out in order, ``take(n)`` at a time, one block in memory."""

    def __init__(self, store: EmbeddingStore) -> None:
        self.store, self.row, self.block, self.vectors = store, 0, -1, np.empty((0, store.layout.dimension), dtype=np.float32)

    def take(self, count: int) -> np.ndarray:
        """(count, dim) float32: the next ``count`` rows."""
        parts, stop = [], self.row + count
        while self.row < stop:
            block = self.row // self.store.layout.block_rows
            if block != self.block:
                self.block, self.vectors = block, self.store.block(block)[1]
            start, end = self.store.layout.block_range(block)
            parts.append(self.vectors[self.row - start : min(stop, end) - start])
            self.row = min(stop, end)
        return np.concatenate(parts) if parts else np.empty((0, self.store.layout.dimension), dtype=np.float32)


def _record_problem(record: dict[str, Any]) -> str | None:
    """Why a record cannot be scored, or None. Empty passages are allowed (scored 0); a record whose
    positives are all empty has no positive to train on."""
    positives, negatives = record.get("pos") or [], record.get("neg") or []
    if not (isinstance(positives, list) and isinstance(negatives, list)):
        return "pos/neg are not lists"
    if not all(isinstance(text, str) for text in positives + negatives):
        return "a positive or negative is not a string"
    return invalid_reason(
        FinetuneExample(
            query=record.get("query"),
            positives=[text for text in positives if has_visible_text(text)],
            negatives=[text for text in negatives if has_visible_text(text)],
        )
    )
