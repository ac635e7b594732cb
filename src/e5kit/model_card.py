"""Hub-ready model cards: one builder for every model e5kit saves (pre-training, fine-tuning, ``Encoder.save``).

A card is a README.md with YAML front matter the Hugging Face Hub reads (``library_name:
sentence-transformers``, ``pipeline_tag: sentence-similarity``, ``tags``, ``base_model``, ``license``
and ``language`` carried over from the start model's own card, ``datasets``) and, once e5kit has
evaluated the model (``e5kit eval card``), a ``model-index`` of the scores it measured. The front
matter is written and read with huggingface_hub's ``ModelCardData`` / ``ModelCard``.

No saved artefact names a model or file by an absolute path: local paths are written relative to
the folder of the artefact that names them (``portable_name``), Hub models by their repository id.

Example:
    >>> card = build_model_card(encoder, title="My encoder", model_name="my-encoder",
    ...                         start=start_model("intfloat/e5-small-v2", Path("runs/ft/final")))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

#: Tags of every e5kit model (a stage adds its own, e.g. "e5kit-pretrain").
TAGS = ("sentence-transformers", "sentence-similarity", "feature-extraction", "e5kit")
#: Front-matter fields carried over from the start model's card: its licence and languages stay true of a
#: model trained from it.
CARRIED_FIELDS = ("license", "license_name", "license_link", "language")
#: e5kit task -> the task type of the Hub's model-index (MTEB's names).
TASK_TYPES = {
    "retrieval": "Retrieval",
    "sts": "STS",
    "classification": "Classification",
    "clustering": "Clustering",
    "pair_classification": "PairClassification",
    "reranking": "Reranking",
}
#: Bundled model names -> their Hub repository.
BUNDLED_HUB_IDS = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}
EVALUATION_HEADING = "## Evaluation"
_HUB_CACHE_FOLDER = re.compile(r"^models--(?P<owner>[^/]+?)--(?P<name>[^/]+)$")


class MeasuredResult(Protocol):
    """What a card needs of an evaluation result (``e5kit.evaluation.results.EvalResult`` has it)."""

    task: str
    dataset: str
    split: str
    metrics: dict[str, float]
    main_metric: str


@dataclass
class StartModel:
    """The model a run started from, as its card names it.

    Attributes:
        name: Its Hub id, or its local path relative to the new model's folder.
        hub_id: Its Hub repository (``base_model``), or, for a local model, the ``base_model`` its own
            card declares (the nearest ancestor on the Hub); None when neither is known.
        metadata: ``CARRIED_FIELDS`` found in its card's front matter.
    """

    name: str
    hub_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def portable_name(name_or_path: str | Path, relative_to: Path) -> str:
    """How a saved artefact in folder ``relative_to`` names a model or file: a local path (an existing one,
    or any absolute one, e.g. a glob pattern) relative to that folder (``../pretrain/final``), a Hub
    model's cached snapshot by its repository id, anything else (a Hub id, a bundled name, a relative
    pattern) as given."""
    path = Path(name_or_path).expanduser()
    if not path.exists() and not path.is_absolute():
        return str(name_or_path)
    hub_id = _hub_id_of_snapshot(path)
    if hub_id is not None:
        return hub_id
    try:
        return os.path.relpath(path.resolve(), Path(relative_to).resolve())
    except ValueError:  # another drive (Windows): no relative path exists
        return path.name


def _hub_id_of_snapshot(path: Path) -> str | None:
    """``owner/name`` for a folder inside a Hugging Face cache snapshot (``models--owner--name/snapshots/REV``)."""
    for parent in path.resolve().parents:
        match = _HUB_CACHE_FOLDER.match(parent.name)
        if match:
            return f"{match['owner']}/{match['name']}"
    return None


def read_front_matter(model_dir: Path) -> dict[str, Any]:
    """The YAML front matter of ``model_dir/README.md`` ({} without one, or when it is not valid YAML,
    which is logged)."""
    from huggingface_hub import metadata_load

    readme = Path(model_dir) / "README.md"
    if not readme.is_file():
        return {}
    try:
        return metadata_load(readme) or {}
    except Exception as error:  # noqa: BLE001 -- a third-party card we only read licence and language from
        logger.warning("%s: front matter not read (%s: %s); its licence and language are not carried over", readme, type(error).__name__, error)
        return {}


def start_model(name_or_path: str | Path, model_dir: Path) -> StartModel:
    """Describe the start model ``name_or_path`` for the card of the model saved in ``model_dir``.

    The start model's own README front matter gives the licence and languages carried over; a local
    start model without a Hub id passes on the ``base_model`` its card declares.
    """
    from e5kit.hub import resolve_model_dir

    name = portable_name(name_or_path, model_dir)
    hub_id = BUNDLED_HUB_IDS.get(str(name_or_path)) or (name if not Path(name_or_path).expanduser().exists() else _hub_id_of_snapshot(Path(name_or_path)))
    try:
        front = read_front_matter(resolve_model_dir(name_or_path))
    except FileNotFoundError:  # a Hub id that cannot be reached now: the card names it all the same
        front = {}
    if hub_id is None and isinstance(front.get("base_model"), (str, list)):
        hub_id = front["base_model"] if isinstance(front["base_model"], str) else None
    return StartModel(name=name, hub_id=hub_id, metadata={key: front[key] for key in CARRIED_FIELDS if front.get(key)})


def build_model_card(
    encoder,
    *,
    title: str,
    model_name: str,
    start: StartModel | None = None,
    stage: str | None = None,
    datasets: Sequence[str] = (),
    training: str = "",
    hyperparameters: Mapping[str, Any] | None = None,
    results: Sequence[MeasuredResult] = (),
) -> str:
    """The README.md of a saved model: Hub front matter, then what the model is, how to use it, how it was
    trained and what e5kit measured.

    Args:
        encoder: The model (an ``Encoder``: its prompts, pooling, similarity, max length and dimension
            are described).
        title: The card's heading.
        model_name: The model's name in the model-index (e.g. the run folder's name).
        start: The model training started from (``start_model``); None for a model not trained by e5kit.
        stage: "pretrain" or "finetune": adds the tag ``e5kit-<stage>``.
        datasets: Names of the training data sets (the front matter's ``datasets``).
        training: Markdown of the stage's own account (objective, steps, data), shown under "Training".
        hyperparameters: The run's settings, shown as JSON.
        results: Evaluation results of this model; each becomes a model-index entry and a table row.

    Returns:
        The card's text; ``huggingface_hub.ModelCard`` parses it.
    """
    from huggingface_hub import ModelCardData

    start = start or StartModel(name="")
    data = ModelCardData(
        library_name="sentence-transformers",
        pipeline_tag="sentence-similarity",
        tags=[*TAGS, *([f"e5kit-{stage}"] if stage else [])],
        base_model=start.hub_id,
        datasets=list(datasets) or None,
        model_name=model_name,
        **start.metadata,
    )
    body = [f"# {title}\n", _overview(encoder, start), _usage(encoder)]
    if training:
        body.append(f"## Training\n\n{training.strip()}\n")
    if hyperparameters:
        body.append(f"## Hyper-parameters\n\n```json\n{json.dumps(dict(hyperparameters), indent=2)}\n```\n")
    text = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)
    return with_results(text, results, model_name) if results else text


def with_results(card: str, results: Sequence[MeasuredResult], model_name: str | None = None) -> str:
    """``card`` with its model-index and its Evaluation section replaced by ``results``.

    Scores are written x100, as e5kit prints them; a metric ending in ``_std`` (a spread, not a score)
    is left out of the model-index. The model-index names the model as the card does, else ``model_name``.

    Raises:
        ValueError: ``results`` is empty, or neither the card nor ``model_name`` names the model.
    """
    from huggingface_hub import EvalResult, ModelCard

    if not results:
        raise ValueError("no evaluation results to add to the model card")
    parsed = ModelCard(card, ignore_metadata_errors=True)
    name = parsed.data.model_name or model_name
    if not name:
        raise ValueError("the model card names no model (model_name); pass one")
    entries = []
    for result in sorted(results, key=lambda r: (r.task, r.dataset, r.split)):
        metrics = [result.main_metric, *sorted(m for m in result.metrics if m != result.main_metric and not m.endswith("_std"))]
        entries += [
            EvalResult(
                task_type=TASK_TYPES.get(result.task, result.task),
                dataset_type=result.dataset,
                dataset_name=result.dataset,
                dataset_split=result.split,
                metric_type=metric,
                metric_value=round(100 * result.metrics[metric], 2),
            )
            for metric in metrics
        ]
    parsed.data.eval_results = entries
    parsed.data.model_name = name
    table = ["| task | data set | split | main metric | score (x100) |", "|---|---|---|---|---|"]
    table += [
        f"| {r.task} | {r.dataset} | {r.split} | {r.main_metric} | {100 * r.metrics[r.main_metric]:.2f} |"
        for r in sorted(results, key=lambda r: (r.task, r.dataset, r.split))
    ]
    section = f"{EVALUATION_HEADING}\n\nMeasured by e5kit (`e5kit eval`); every metric is in the model-index above.\n\n" + "\n".join(table) + "\n"
    body = _replace_section(parsed.text, section)
    return f"---\n{parsed.data.to_yaml()}\n---\n{body}"


def _replace_section(body: str, section: str) -> str:
    """``body`` with its Evaluation section (up to the next ``## `` heading) replaced by ``section``, or
    ``section`` appended."""
    start = body.find(f"\n{EVALUATION_HEADING}\n")
    if start < 0:
        return body.rstrip("\n") + "\n\n" + section
    following = body.find("\n## ", start + 1)
    rest = body[following:] if following >= 0 else ""
    return body[: start + 1] + section + rest


def _overview(encoder, start: StartModel) -> str:
    prompts = ", ".join(f"{role} `{json.dumps(text)}`" for role, text in encoder.prompts.items()) or "none (raw text)"
    lines = [
        f"- start model: `{start.name}`" if start.name else "",
        f"- embeddings: {encoder.dimension} dimensions, {encoder.pooling} pooling, scored by {encoder.similarity_fn_name}"
        + (" (L2-normalised)" if encoder.similarity_fn_name == "cosine" else ""),
        f"- max length: {encoder.max_length} tokens (prefix included)",
        f"- role prefixes: {prompts}",
    ]
    return "\n".join(line for line in lines if line) + "\n"


def _usage(encoder) -> str:
    """Code that embeds with the model through sentence-transformers and through e5kit."""
    query, passage = encoder.prompts.get("query"), encoder.prompts.get("passage")
    if query or passage:
        st_lines = [
            f'queries = model.encode_query(["how do cells divide"]){f"  # adds {query!r}" if query else ""}',
            f'documents = model.encode_document(["Mitosis is ..."]){f"  # adds {passage!r}" if passage else ""}',
        ]
        e5kit_lines = ['queries = encoder.encode_queries(["how do cells divide"])', 'documents = encoder.encode_passages(["Mitosis is ..."])']
    else:
        st_lines = ['queries = model.encode(["how do cells divide"])', 'documents = model.encode(["Mitosis is ..."])']
        e5kit_lines = ['queries = encoder.encode(["how do cells divide"])', 'documents = encoder.encode(["Mitosis is ..."])']
    st_code = "\n".join(['from sentence_transformers import SentenceTransformer', "", 'model = SentenceTransformer("PATH_OR_REPO_ID")',
                          *st_lines, "scores = model.similarity(queries, documents)"])
    e5kit_code = "\n".join(["from e5kit import Encoder", "", 'encoder = Encoder.load("PATH_OR_REPO_ID")', *e5kit_lines, "scores = queries @ documents.T"
                             + ("  # cosine: the vectors are L2-normalised" if encoder.similarity_fn_name == "cosine" else "")])
    return f"## Usage\n\nWith sentence-transformers:\n\n```python\n{st_code}\n```\n\nWith e5kit:\n\n```python\n{e5kit_code}\n```\n"
