"""One pydantic config per evaluation task, loadable from YAML, every field overridable.

Read with ``e5kit.config.load_config``; precedence, lowest first: field defaults, the YAML file (``--config``), command-line options,
``--set key=value`` pairs. An invalid config fails before any model is loaded, naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from e5kit.encoder.model_format import BackendName
from e5kit.evaluation import fields
from e5kit.evaluation.tables import column_names
from e5kit.retrieval.engines import StoreEmbedding

__all__ = ["EvalConfig"]


class EvalConfig(BaseModel):
    """Settings every task shares.

    Attributes:
        models: Model directories, bundled names or Hub ids (retrieval also takes "bm25").
        data: Data folder (or file) of the task; see the task's help for its format.
        split: Split to score.
        batch_size: Texts per forward pass.
        max_length: Token limit (None: the model's own).
        dtype: float32, bfloat16, float16 (CUDA only), or auto (CPU: bfloat16 where measured faster and
            faithful); None: the backend's default (torch float32, OpenVINO the precision its export
            recorded). Refused for onnx, whose graph fixes its precision.
        device: Torch device, e.g. cpu or cuda:0 (None: cuda when present); onnx and openvino run on the CPU.
        backend: "torch"; "onnx" to evaluate a folder written by ``e5kit export onnx`` (with its
            default graph), "openvino" one written by ``e5kit export openvino``, "auto" the backend,
            file and precision ``e5kit export auto`` recorded (``dtype`` is then refused).
        query_role: Override the role of queries / single texts / first texts (E5 default: query; "none" = no prefix).
        passage_role: Override the role of documents / candidates / second texts (E5: passage for retrieval, else query).
        results_dir: Where result JSON files go (and stages/, the markers of finished runs).
        cache: Keep embeddings in the cache so a rerun does not embed again (--no-cache: embed everything
            afresh and store nothing).
        cache_dir: Embedding cache folder (None: $E5KIT_CACHE_DIR or ~/.cache/e5kit/embeddings).
        mteb_results: Also write each result in mteb's format into this mteb ``ResultCache`` folder
            (``results/<model>/<revision>/<TaskName>.json``; see ``e5kit.evaluation.mteb_results``).
        mteb_task: The MTEB task name those files take (default: the MTEB task of a known data set, e.g.
            scifact -> SciFact, else the data set's folder name).
        mteb_languages: The data's languages in those files, as mteb's ISO 639-3 + ISO 15924 codes (e.g.
            [eng-Latn]; default: English for the known MTEB tasks, else und-Zzzz, "undetermined").
    """

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(default=["all-MiniLM-L6-v2"], min_length=1)
    data: Path
    split: str = "test"
    batch_size: int = Field(32, ge=1)
    max_length: int | None = Field(None, ge=8)
    dtype: Literal["float32", "bfloat16", "float16", "auto"] | None = None
    device: str | None = None
    backend: BackendName = "torch"
    query_role: str | None = None
    passage_role: str | None = None
    results_dir: Path = Path("results")
    cache: bool = True
    cache_dir: Path | None = None
    mteb_results: Path | None = None
    mteb_task: str | None = None
    mteb_languages: list[Annotated[str, StringConstraints(pattern=r"^[a-z]{3}-[A-Z][a-z]{3}$")]] | None = Field(None, min_length=1)

    @field_validator("mteb_task")
    @classmethod
    def _plain_task_name(cls, name: str | None) -> str | None:
        # checked here so a bad name fails before any model loads, not after the evaluation
        if name is not None and (not name.strip() or "/" in name or "\\" in name or name in (".", "..")):
            raise ValueError(f"{name!r}: expected a plain name (it becomes <TaskName>.json)")
        return name

    @model_validator(mode="after")
    def _bm25_only_for_retrieval(self):
        if "bm25" in self.models and not isinstance(self, RetrievalConfig):
            raise ValueError("models: 'bm25' is a retrieval baseline; this task needs embedding models")
        return self


class RetrievalConfig(EvalConfig, StoreEmbedding):
    """Retrieval settings; the two rules are per data set (see ``e5kit.evaluation.retrieval``). ``engine``,
    ``workers`` and ``block_rows`` say how a corpus store is embedded.

    Attributes:
        top_k: Documents retrieved per query.
        ignore_identical_ids: A retrieved document whose id equals the query id is removed: "unjudged"
            only when the qrels do not judge it for that query; "always" (BEIR); "never" (mteb's default).
        exclude_queries_without_relevant: Leave queries whose qrels scores are all <= 0 out of the mean
            (false: averaged as 0, as BEIR and mteb do).
        corpus_store: Embed the corpus into an on-disk store (stores/ in the embedding cache folder, its
            cache for reruns) in block_rows blocks and search it block by block, so its embeddings never
            sit in memory; the scores are the in-memory path's. Implied by engine torchrun or ray.
    """

    top_k: int = Field(100, ge=1)
    ignore_identical_ids: Literal["unjudged", "always", "never"] = "unjudged"
    exclude_queries_without_relevant: bool = False
    corpus_store: bool = False


class MappedColumnsConfig(EvalConfig):
    """A task that reads named fields from the user's own files.

    Attributes:
        columns: Field -> the column (TSV header name or JSONL key) holding it in the data, for files
            named otherwise, e.g. SICK for STS: ``{sentence1: sentence_A, sentence2: sentence_B, score:
            relatedness_score}``; fields left out are read from columns of their own name.
    """

    #: The fields the task reads (its files' default column names).
    FIELDS: ClassVar[tuple[str, ...]] = ()

    columns: dict[str, str] = {}

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, columns: dict[str, str]) -> dict[str, str]:
        column_names(cls.FIELDS, columns)  # ValueError naming the unknown field or the shared column
        return columns


class STSConfig(MappedColumnsConfig):
    FIELDS = fields.STS


class PairClassificationConfig(MappedColumnsConfig):
    FIELDS = fields.PAIR_CLASSIFICATION


class RerankingConfig(MappedColumnsConfig):
    FIELDS = fields.RERANKING


class ClassificationConfig(MappedColumnsConfig):
    """Classification settings (MTEB's).

    Attributes:
        train_split: Split the classifier trains on.
        samples_per_label: Training examples per label per experiment (as MTEB; null = all).
        experiments: Undersampled runs averaged.
        seed: Seed of the undersampling.
        max_iter: Iterations of the logistic regression.
        normalize: L2-normalise the embeddings first.
    """

    FIELDS = fields.CLASSIFICATION

    train_split: str = "train"
    samples_per_label: int | None = Field(8, ge=1)
    experiments: int = Field(10, ge=1)
    seed: int = 42
    max_iter: int = Field(100, ge=1)
    normalize: bool = False


class ClusteringConfig(MappedColumnsConfig):
    """Clustering settings.

    Attributes:
        seeds: k-means seeds averaged.
        kmeans_batch_size: Mini-batch size of k-means.
    """

    FIELDS = fields.CLUSTERING

    seeds: int = Field(10, ge=1)
    kmeans_batch_size: int = Field(500, ge=1)

