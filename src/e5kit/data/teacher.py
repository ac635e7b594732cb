"""Teacher scores for fine-tuning: a cross-encoder re-ranker or a bi-encoder scores every (query, candidate).

``score_file`` reads FlagEmbedding JSONL (``{query, pos, neg, ...}``, e.g. from ``e5kit mine-negatives``)
and writes the same records with ``pos_scores`` and ``neg_scores`` added. Pairs are scored in batches
across records; records are written in blocks of ``BLOCK_RECORDS`` to ``OUT.partial``, which is renamed
onto ``OUT`` only when every record is scored, so ``OUT`` is never a half output that fine-tuning would
take as complete. A killed run resumes (``score_file`` appends to the partial file and skips the records
already in it, after checking that they are the input's first records). A resumed run keeps only the
whole blocks a killed one wrote and scores the rest in the same blocks, so its output is the
uninterrupted run's, byte for byte (a batch's padding would otherwise change the last bits of a score).

Empty passages (no visible text, ``e5kit.io.text.has_visible_text``) follow the corpus rule every stage
shares (``e5kit.io.beir``): never sent to the teacher, scored 0 (the cosine of an all-zero
embedding), kept in their record, and counted in the report (``empty_passages``).

Example:
    >>> teacher = load_teacher("cross-encoder-dir")                        # doctest: +SKIP
    >>> score_file(teacher, "mined.jsonl", "scored.jsonl")                 # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from e5kit.data.finetune_formats import FinetuneExample, RecordIssues, invalid_reason
from e5kit.io.files import InputFormatError
from e5kit.io.tables import iter_jsonl
from e5kit.io.text import has_visible_text
from e5kit.progress import progress_bar

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

        from e5kit.encoder import auto_device
        from e5kit.hub import resolve_model_dir

        folder = resolve_model_dir(path)
        model = AutoModelForSequenceClassification.from_pretrained(folder).to(device or auto_device())
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
    """

    def __init__(self, encoder, *, batch_size: int = 32, name: str = "bi-encoder") -> None:
        self.encoder = encoder
        self.batch_size = batch_size
        self.name = name

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
        from e5kit.encoder import Encoder

        encoder = Encoder.load(path, max_length=max_length, similarity_fn_name=similarity_fn_name, device=device)
        return BiEncoderTeacher(encoder, batch_size=batch_size, name=str(path))
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
                f"{out_path}:{number}: not a scored record; the output belongs to something else (use a new output file or --no-resume)"
            ) from None
        end += len(line)
        ends.append(end)
    return queries, ends


def partial_path(out_path: str | Path) -> Path:
    """Where ``score_file`` writes ``out_path`` until it is complete: ``OUT.partial`` beside it."""
    out_path = Path(out_path)
    return out_path.with_name(f"{out_path.name}{PARTIAL_SUFFIX}")


def score_file(teacher: Teacher, in_path: str | Path, out_path: str | Path, *, resume: bool = True, show_progress: bool = True) -> dict[str, Any]:
    """Add teacher ``pos_scores``/``neg_scores`` to every usable record of a FlagEmbedding JSONL file.

    The records are written to :func:`partial_path` and renamed onto ``out_path`` only when every record
    is scored, so ``out_path`` is always a finished output (a previous one stays until the new one is).

    Args:
        teacher: The scorer.
        in_path: Input JSONL (``query``, ``pos``, ``neg``; other fields are kept).
        out_path: Output JSONL.
        resume: Keep the whole blocks of records already written (the partial file a killed run left,
            else ``out_path``) and score only the rest (the records of an unfinished block, once checked,
            are scored again with their block).
        show_progress: Progress bar over records.

    Returns:
        Report: records scored now, already done (kept), pairs scored by the teacher, empty passages
        (scored 0 without the teacher), skipped records by reason.

    Raises:
        InputFormatError: the existing output does not start with the input's records (named line); it
            is left as it was.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    partial = partial_path(out_path)
    written = partial if partial.exists() else out_path
    done, ends = _written_records(written) if resume else ([], [])
    kept = len(done) - len(done) % BLOCK_RECORDS
    if len(done) > kept:
        logger.warning("%s: the last %d records form an unfinished block; they are checked and scored again", written, len(done) - kept)
    issues = RecordIssues()
    matched = scored = pairs = empty = 0
    handle = None

    def writer():
        """The partial file, opened at the first write, once every kept record was checked: it starts
        as the whole blocks already written (copied from a finished output), the rest cut off."""
        nonlocal handle
        if handle is None:
            if written == out_path and resume and out_path.exists():
                shutil.copyfile(out_path, partial)
            handle = partial.open("a" if resume else "w", encoding="utf-8")
            handle.truncate(ends[kept - 1] if kept else 0)
        return handle

    def flush() -> None:
        nonlocal scored, pairs, empty
        queries = [r["query"] for r in block for _ in r["pos"] + r["neg"]]
        passages = [text for r in block for text in r["pos"] + r["neg"]]
        visible = [i for i, text in enumerate(passages) if has_visible_text(text)]
        scored_visible = teacher.score_pairs([queries[i] for i in visible], [passages[i] for i in visible]).tolist() if visible else []
        if len(scored_visible) != len(visible):
            first = block[0].get("query_id", block[0]["query"])
            raise ValueError(f"teacher {teacher.name} returned {len(scored_visible)} scores for {len(visible)} pairs (block starting at record {first!r})")
        scores = [0.0] * len(passages)  # empty passages: never sent to the teacher, score 0
        for i, score in zip(visible, scored_visible):
            scores[i] = score
        position = 0
        for record in block:
            record["pos_scores"] = scores[position : position + len(record["pos"])]
            position += len(record["pos"])
            record["neg_scores"] = scores[position : position + len(record["neg"])]
            position += len(record["neg"])
            writer().write(json.dumps(record, ensure_ascii=False) + "\n")
        writer().flush()
        os.fsync(writer().fileno())
        scored += len(block)
        pairs += len(visible)
        empty += len(passages) - len(visible)
        progress.update(len(block))
        block.clear()

    out_path.parent.mkdir(parents=True, exist_ok=True)
    block: list[dict[str, Any]] = []
    try:
        with progress_bar(desc="teacher scores", unit="record", show=show_progress) as progress:
            for line_number, record in iter_jsonl(in_path):
                record.pop("pos_scores", None)
                record.pop("neg_scores", None)
                name = f"{in_path}:{line_number}"
                reason = _record_problem(record)
                if reason is not None:
                    issues.add(reason, name)
                    continue
                if matched < len(done):
                    if done[matched] != record["query"]:
                        raise InputFormatError(
                            f"{written}:{matched + 1}: holds query {done[matched]!r} but {name} is {record['query']!r}; "
                            "the output belongs to another input (use a new output file or --no-resume)"
                        )
                    matched += 1
                    if matched <= kept:
                        progress.update(1)
                        continue
                block.append(record)  # a new record, or one of an unfinished block (scored again)
                if len(block) == BLOCK_RECORDS:
                    flush()
            if matched < len(done):
                raise InputFormatError(f"{written}: holds {len(done)} records but {in_path} has only {matched} usable ones")
            if block:
                flush()
            writer().close()  # also when nothing was left to score: a killed run's partial file is finished now
    finally:
        if handle is not None:
            handle.close()
    os.replace(partial, out_path)
    return {
        "teacher": teacher.name,
        "scored": scored,
        "already_done": kept,
        "pairs_scored": pairs,
        "empty_passages": empty,
        "skipped": issues.summary(),
    }


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
