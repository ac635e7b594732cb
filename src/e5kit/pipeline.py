"""The quickstart: the whole E5 pipeline chained stage by stage in one work folder.

corpus -> curate -> holdout -> consistency -> pretrain -> evaluate -> export + index. Each stage is the same
library call as its own ``e5kit`` command, writes into ``<workdir>/<stage>/`` and finishes by writing
``<workdir>/<stage>/stage.json`` (its summary); a rerun skips stages that have one, ``force`` redoes
them. Without a config the chain runs offline on the standard library's documentation with the
bundled all-MiniLM-L6-v2; a YAML config swaps in real dumps, hub models and GPUs (configs/quickstart_*.yaml).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from e5kit.hub import DEFAULT_MODEL
from e5kit.io.files import write_text_atomic
from e5kit.processes import die_with_parent

STAGES = ("corpus", "curate", "holdout", "consistency", "pretrain", "evaluate", "index")
STAGE_FILE = "stage.json"
#: The fingerprint of the settings a stage was started with: an unfinished resumable stage resumes only under the same.
STAGE_SETTINGS_FILE = "stage-settings.txt"


class QuickstartConfig(BaseModel):
    """Settings of the chained run; stage sections are merged over the offline defaults.

    Attributes:
        workdir: Folder holding every stage's output.
        model: Starting encoder (path, bundled name or Hub id).
        heldout_queries: Size of the held-out retrieval split of the built-in corpus.
        corpus_size: Use only this many documented objects of the built-in corpus (None = all ~2.3k).
        sources: Curation sources (``e5kit curate`` format); empty = the built-in stdlib corpus.
        curate: Overrides of the curation config (filters, engine, workers...).
        holdout: Overrides of the held-out split step (``e5kit holdout``: fraction, max_queries...) run on
            ``sources``; ``{"enabled": false}`` skips it. The built-in corpus has its own split.
        consistency: Overrides of the consistency-filter config; ``{"enabled": false}`` skips it.
        pretrain: Overrides of the pre-training config (batch_size, max_steps, lr, prompts...).
        nproc_per_node: Processes for pre-training; above 1 it runs under ``torchrun``.
        eval_data: BEIR folders to evaluate on besides the per-source held-out splits (the built-in
            corpus: instead of its own split).
        index_corpus: JSONL documents ({"_id", "title", "text"}) to index; None = the first evaluation corpus.
        seed: Seed of every stage.
    """

    model_config = ConfigDict(extra="forbid")

    workdir: Path = Path("e5kit-quickstart")
    model: str = DEFAULT_MODEL
    heldout_queries: int = Field(default=300, ge=10)
    corpus_size: int | None = Field(default=None, ge=20)
    sources: list[dict[str, Any]] = []
    curate: dict[str, Any] = {}
    holdout: dict[str, Any] = {}
    consistency: dict[str, Any] = {}
    pretrain: dict[str, Any] = {}
    nproc_per_node: int = Field(default=1, ge=1)
    eval_data: list[Path] = []
    index_corpus: Path | None = None
    seed: int = 13

    @model_validator(mode="after")
    def _stage_sections_valid(self) -> QuickstartConfig:
        check_stage_sections(curate=self.curate, sources=self.sources or None, holdout=self.holdout, consistency=self.consistency, pretrain=self.pretrain)
        return self


#: Offline defaults, sized so the whole chain takes minutes on 2 CPU cores.
DEFAULT_CURATE: dict[str, Any] = {
    "workers": 2,
    "filters": {
        "length": {"min_query_words": 2, "max_query_words": 64, "min_passage_words": 8, "max_passage_words": 2048},
        "language": {"languages": ["en"], "min_confidence": 0.5},
        "near_dedup": {"threshold": 0.9},
    },
}
#: k = 10 rather than E5's 2: the pool is ~2k passages of one narrow domain (docstrings look alike), and
#: k = 2 would keep only a third of the pairs; k = 10 drops the third the start model finds least consistent.
DEFAULT_CONSISTENCY: dict[str, Any] = {"enabled": True, "k": 10, "pool_size": 1_000_000, "max_length": 256}
#: Continued pre-training of an already trained encoder: a small lr, and all-MiniLM-L6-v2's own
#: temperature (its training used scale 20, tau = 0.05) rather than E5's from-scratch 0.01.
DEFAULT_PRETRAIN: dict[str, Any] = {
    "max_steps": 30,
    "batch_size": 64,
    "chunk_size": 32,
    "lr": 5e-5,
    "warmup_steps": 3,
    "tau": 0.05,
    "query_max_length": 64,
    "passage_max_length": 128,
    "checkpoint_every": 10,
    "mask_false_negatives": True,
}


def check_stage_sections(
    *, curate: dict[str, Any] | None = None, sources: list[dict[str, Any]] | None = None, holdout: dict[str, Any] | None = None,
    consistency: dict[str, Any] | None = None, pretrain: dict[str, Any] | None = None, where: str = "",
) -> None:
    """Validate a chained run's stage sections, merged over the defaults, before any stage runs (no file
    is read: the inputs' paths are checked by ``check_inputs`` when the run starts).

    Raises:
        ValueError: one line naming the section (``where`` first, e.g. ``variants.2``) and every bad field.
    """
    from pydantic import ValidationError

    from e5kit.config import describe_validation_error
    from e5kit.data.consistency import ConsistencyConfig
    from e5kit.data.curation import CurateConfig
    from e5kit.data.holdout import HoldoutConfig
    from e5kit.training.config import PretrainConfig

    placeholder = "(set by the run)"
    checks = []
    if curate is not None:
        checks.append(("curate", CurateConfig, {**merge_settings(DEFAULT_CURATE, curate), "output_dir": placeholder, "sources": sources or [{"type": "pydoc"}]}))
    if holdout is not None:
        checks.append(("holdout", HoldoutConfig, {**{k: v for k, v in holdout.items() if k != "enabled"}, "pairs": [placeholder], "output_dir": placeholder}))
    if consistency is not None:
        settings = {k: v for k, v in merge_settings(DEFAULT_CONSISTENCY, consistency).items() if k != "enabled"}
        checks.append(("consistency", ConsistencyConfig, {"model": placeholder, **settings, "pairs": [placeholder], "output_dir": placeholder}))
    if pretrain is not None:
        settings = merge_settings(DEFAULT_PRETRAIN, pretrain)
        settings["data"] = merge_settings(settings.get("data", {}), {"paths": [placeholder]})
        checks.append(("pretrain", PretrainConfig, {**settings, "init_model": placeholder, "output_dir": placeholder}))
    for name, schema, tree in checks:
        try:
            schema.model_validate(tree)
        except ValidationError as error:
            raise ValueError(f"{where}{'.' if where else ''}{name}: {describe_validation_error(error)}") from None


def check_inputs(sources: list[dict[str, Any]], curate: dict[str, Any]) -> None:
    """Check, before any stage runs, that every curation input can be read (one line naming the path).

    Raises:
        ValueError: a missing or unreadable input, naming it.
    """
    from e5kit.data.curation import CurateConfig
    from e5kit.data.curation.planner import check_inputs as check_curation_inputs

    check_curation_inputs(CurateConfig.model_validate({**merge_settings(DEFAULT_CURATE, curate), "output_dir": ".", "sources": sources}))


def merge_settings(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged into ``base``, nested mappings key by key (a stage section over its defaults)."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = merge_settings(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def settings_fingerprint(settings: Any) -> str:
    """A short stable hash of a stage's settings (JSON, keys sorted; paths as strings)."""
    return hashlib.blake2b(json.dumps(settings, sort_keys=True, default=str).encode(), digest_size=6).hexdigest()


def run_stage(
    folder: Path,
    action: Callable[[Path], dict[str, Any]],
    *,
    force: bool,
    log: Callable[[str], None],
    label: str,
    settings: Any = None,
    resumable: bool = False,
) -> dict[str, Any]:
    """Run ``action(folder)`` unless ``folder/stage.json`` says it finished with the same ``settings``;
    returns its summary (with the settings' fingerprint under ``"settings"``).

    A finished stage whose settings changed is redone, and so is a folder without a marker (a stage
    that did not finish): it is removed first, unless the stage is ``resumable`` and was started with
    the same settings (then ``action`` finds its own progress, e.g. training checkpoints). The marker
    is written atomically after the action returns, so a kill never leaves half of one.
    """
    marker, started_with = folder / STAGE_FILE, folder / STAGE_SETTINGS_FILE
    fingerprint = settings_fingerprint(settings)
    if marker.is_file() and not force:
        done = json.loads(marker.read_text(encoding="utf-8"))
        if done.get("settings", fingerprint) == fingerprint:  # markers of older versions carry none
            log(f"[{label}] done before, skipped (--force redoes it)")
            return done
        log(f"[{label}] settings changed since it ran: redoing it")
    resume = resumable and not force and not marker.is_file() and started_with.is_file() and started_with.read_text(encoding="utf-8") == fingerprint
    if folder.exists() and not resume:
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(started_with, fingerprint)
    log(f"[{label}] {'resuming' if resume else 'running'}")
    started = time.perf_counter()
    summary = action(folder)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["settings"] = fingerprint
    write_text_atomic(marker, json.dumps(summary, indent=2, default=str))
    log(f"[{label}] finished in {summary['seconds']:.0f}s")
    return summary


def curate_stage(folder: Path, sources: list[dict[str, Any]], overrides: dict[str, Any], seed: int, log: Callable[[str], None]) -> dict[str, Any]:
    """``e5kit curate`` of ``sources`` with the offline defaults under ``overrides``, into ``folder``."""
    from e5kit.data.curation import CurateConfig, curate

    settings = merge_settings(DEFAULT_CURATE, overrides)
    settings.update(output_dir=str(folder), seed=seed, sources=sources)
    report = curate(CurateConfig.model_validate(settings))
    totals = report["totals"]
    log(f"  read {totals['read']}, kept {totals['kept']}; dropped by reason: {totals['dropped']}")
    return {"pairs_dir": str(folder / "pairs"), "read": totals["read"], "kept": totals["kept"], "dropped": totals["dropped"]}


def holdout_stage(folder: Path, pairs_dir: str, overrides: dict[str, Any], seed: int, log: Callable[[str], None]) -> dict[str, Any]:
    """``e5kit holdout`` of curated pairs: per-source held-out BEIR splits and the training pairs left."""
    from e5kit.data.holdout import HoldoutConfig, holdout

    settings = {**overrides, "pairs": [pairs_dir], "output_dir": str(folder), "seed": seed}
    report = holdout(HoldoutConfig.model_validate(settings))
    for name, entry in report["sources"].items():
        log(f"  {name}: {entry['heldout']['queries']} held-out queries, {entry['kept']} of {entry['read']} pairs kept for training")
    return {"pairs_dir": str(folder / "pairs"), "eval_dirs": report["eval_dirs"], "read": report["read"], "kept": report["kept"]}


def consistency_stage(folder: Path, pairs_dir: str, model: str, overrides: dict[str, Any], seed: int, log: Callable[[str], None]) -> dict[str, Any]:
    """The consistency filter with the defaults under ``overrides`` (``{"enabled": false}`` passes the pairs on)."""
    from e5kit.data.consistency import ConsistencyConfig, consistency_filter
    from e5kit.training.trainer import pretrain_on

    settings = merge_settings(DEFAULT_CONSISTENCY, overrides)
    if not settings.pop("enabled"):
        return {"pairs_dir": pairs_dir, "enabled": False}
    settings["model"] = settings.get("model") or model  # a preliminary model of its own, if given
    settings.update(pairs=[pairs_dir], output_dir=str(folder), seed=seed)
    report = consistency_filter(ConsistencyConfig.model_validate(settings), train_fn=pretrain_on)
    log(f"  consistency filter (k={report['k']}) kept {report['kept']} of {report['read']} pairs")
    return consistency_summary(folder, report)


def consistency_summary(folder: Path, report: dict[str, Any]) -> dict[str, Any]:
    """A finished consistency step's summary (its ``stage.json``) from the filter's report."""
    return {"pairs_dir": str(folder / "pairs"), "enabled": True, "read": report["read"], "kept": report["kept"], "k": report["k"]}


def pretrain_stage(
    folder: Path, pairs_dir: str, model: str, overrides: dict[str, Any], seed: int, nproc_per_node: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """Continued pre-training of ``model`` on ``pairs_dir`` (under torchrun when ``nproc_per_node`` > 1)."""
    from e5kit.encoder.model_format import read_model_dir
    from e5kit.hub import resolve_model_dir

    settings = merge_settings(DEFAULT_PRETRAIN, overrides)
    # Keep the starting model's own prefix convention (none for all-MiniLM) unless the config sets one.
    settings.setdefault("prompts", read_model_dir(resolve_model_dir(model)).prompts)
    settings.update(
        init_model=model,
        output_dir=str(folder / "run"),
        seed=seed,
        data=merge_settings(settings.get("data", {}), {"paths": [pairs_dir]}),
    )
    from e5kit.training.checkpoint import list_checkpoints
    from e5kit.training.metrics import read_metrics

    # A run killed before it finished continues from its newest checkpoint (run_stage keeps its folder).
    resume = bool(list_checkpoints(Path(settings["output_dir"]) / "checkpoints"))
    if resume:
        log("  resuming from the newest checkpoint")
    if nproc_per_node > 1:
        config_path = folder / "pretrain.yaml"
        config_path.write_text(yaml.safe_dump(settings), encoding="utf-8")
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
                   "-m", "e5kit", "pretrain", "--config", str(config_path), *(["--resume"] if resume else [])]
        log("  " + " ".join(command))
        # SIGTERM when this process ends, however it ends: torchrun then stops its own workers.
        subprocess.run(command, check=True, preexec_fn=functools.partial(die_with_parent, os.getpid(), signal.SIGTERM))
        final = Path(settings["output_dir"]) / "final"
    else:
        from e5kit.evaluation.retrieval import retrieval_evaluator
        from e5kit.training.trainer import pretrain

        final = pretrain(settings, resume=resume, evaluator=retrieval_evaluator(settings["eval_data"]) if settings.get("eval_data") else None)
    metrics = read_metrics(Path(settings["output_dir"]) / "metrics.jsonl")
    losses = [row["loss"] for row in metrics if "loss" in row]
    log(f"  {len(losses)} steps; loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return {"model": str(final), "steps": len(losses), "first_loss": losses[0], "last_loss": losses[-1],
            "loss_curve": str(Path(settings["output_dir"]) / "loss_curve.png")}


def evaluate_retrieval(folder: Path, models: dict[str, str], eval_dirs: list[Path], log: Callable[[str], None]) -> list[dict[str, Any]]:
    """nDCG@10 and Recall@100 of each labelled model (a path, a bundled name or ``bm25``) on each BEIR folder.

    Embeddings and results are cached under ``folder`` (per weights and data), so a model evaluated
    before is not encoded again. Returns one row per (data set, model).
    """
    from e5kit.encoder import Encoder
    from e5kit.evaluation.config import RetrievalConfig
    from e5kit.evaluation.runner import run_task

    rows = []
    for data in eval_dirs:
        config = RetrievalConfig(models=list(models.values()), data=data, results_dir=folder / "results", cache_dir=folder / "cache")
        for label, (result, _) in zip(models, run_task("retrieval", config, Encoder.load)):
            rows.append({"model": label, "dataset": result.dataset, "data": str(data), "ndcg_at_10": result.metrics["ndcg_at_10"],
                         "recall_at_100": result.metrics["recall_at_100"]})
            log(f"  {result.dataset}: {label} nDCG@10 {100 * result.metrics['ndcg_at_10']:.1f}")
    return rows


class Quickstart:
    """Runs the stages in order, skipping those already finished.

    Args:
        config: The run's settings.
        force: Redo stages even when they finished before.
        log: Where progress lines go.
    """

    def __init__(self, config: QuickstartConfig, *, force: bool = False, log: Callable[[str], None] = print) -> None:
        self.config = config
        self.force = force
        self.log = log
        self.workdir = config.workdir
        self.summaries: dict[str, dict[str, Any]] = {}

    def stage_dir(self, stage: str) -> Path:
        return self.workdir / stage

    def check(self) -> None:
        """Check the inputs every stage will read, before any runs.

        Raises:
            ValueError: a curation input that is missing or unreadable, naming it.
        """
        if self.config.sources:
            check_inputs(self.config.sources, self.config.curate)

    def run(self) -> dict[str, dict[str, Any]]:
        """Run every stage (after :meth:`check`); returns each stage's summary."""
        self.check()
        self.workdir.mkdir(parents=True, exist_ok=True)
        upstream = ""
        for stage in STAGES:
            # A stage's settings include the fingerprint of the one before, so a change redoes what follows it.
            settings = [upstream, self._settings(stage)]
            self.summaries[stage] = run_stage(self.stage_dir(stage), getattr(self, f"_{stage}"), force=self.force, log=self.log,
                                              label=stage, settings=settings, resumable=stage == "pretrain")
            upstream = settings_fingerprint(settings)
        return self.summaries

    def _settings(self, stage: str) -> Any:
        """The part of the config a stage's output depends on (besides the stages before it)."""
        config = self.config.model_dump(mode="json")
        return {
            "corpus": [config[k] for k in ("sources", "heldout_queries", "corpus_size", "seed")],
            "curate": [config[k] for k in ("sources", "curate", "seed")],
            "holdout": [config[k] for k in ("holdout", "seed")],
            "consistency": [config[k] for k in ("consistency", "model", "seed")],
            "pretrain": [config[k] for k in ("pretrain", "model", "seed", "nproc_per_node")],
            "evaluate": [config[k] for k in ("eval_data", "model")],
            "index": [config["index_corpus"]],
        }[stage]

    # ------------------------------------------------------------------ stages
    def _corpus(self, folder: Path) -> dict[str, Any]:
        from e5kit.data.stdlib_corpus import build_stdlib_corpus

        if self.config.sources:
            return {"builtin": False}
        built = build_stdlib_corpus(folder, heldout=self.config.heldout_queries, seed=self.config.seed, limit=self.config.corpus_size)
        self.log(f"  {built.pairs} documented stdlib objects; {built.heldout} held out as test queries")
        return {
            "builtin": True,
            "pairs_path": str(built.pairs_path),
            "eval_dir": str(built.eval_dir),
            "heldout_path": str(built.heldout_path),
            "pairs": built.pairs,
            "heldout": built.heldout,
        }

    def _curate(self, folder: Path) -> dict[str, Any]:
        corpus = self.summaries["corpus"]
        overrides = self.config.curate
        if corpus["builtin"]:
            sources = [{"type": "generic", "name": "pydoc", "paths": [corpus["pairs_path"]]}]
            filters = overrides.get("filters", {})
            decontaminate = {"eval_paths": [corpus["heldout_path"]], **filters.get("decontaminate", {})}
            overrides = {**overrides, "filters": {**filters, "decontaminate": decontaminate}}
        else:
            sources = self.config.sources
        return curate_stage(folder, sources, overrides, self.config.seed, self.log)

    def _holdout(self, folder: Path) -> dict[str, Any]:
        curated = self.summaries["curate"]["pairs_dir"]
        if self.summaries["corpus"]["builtin"] or not self.config.holdout.get("enabled", True):
            return {"pairs_dir": curated, "eval_dirs": [], "enabled": False}  # the corpus stage held out the built-in split
        overrides = {key: value for key, value in self.config.holdout.items() if key != "enabled"}
        return {**holdout_stage(folder, curated, overrides, self.config.seed, self.log), "enabled": True}

    def _consistency(self, folder: Path) -> dict[str, Any]:
        return consistency_stage(folder, self.summaries["holdout"]["pairs_dir"], self.config.model, self.config.consistency, self.config.seed, self.log)

    def _pretrain(self, folder: Path) -> dict[str, Any]:
        pairs = self.summaries["consistency"]["pairs_dir"]
        return pretrain_stage(folder, pairs, self.config.model, self.config.pretrain, self.config.seed, self.config.nproc_per_node, self.log)

    def _evaluate(self, folder: Path) -> dict[str, Any]:
        eval_dirs = [Path(d) for d in self.summaries["holdout"]["eval_dirs"]] + list(self.config.eval_data)
        if self.summaries["corpus"]["builtin"] and not self.config.eval_data:
            eval_dirs = [Path(self.summaries["corpus"]["eval_dir"])]
        models = {"BM25": "bm25", f"{self.config.model} (start)": self.config.model, "e5kit pre-trained": self.summaries["pretrain"]["model"]}
        rows = evaluate_retrieval(folder, models, eval_dirs, lambda line: None)
        table = results_table(rows, [str(Path(d)) for d in self.summaries["holdout"]["eval_dirs"]])
        (folder / "results.md").write_text(table + "\n", encoding="utf-8")
        self.log(table)
        return {"rows": rows, "table": table, "eval_dirs": [str(d) for d in eval_dirs]}

    def _index(self, folder: Path) -> dict[str, Any]:
        from e5kit.encoder import Encoder
        from e5kit.io.beir import find_file, load_queries
        from e5kit.serving.index import IndexSettings, VectorIndex, corpus_documents

        model_dir = folder / "model"
        shutil.copytree(self.summaries["pretrain"]["model"], model_dir)
        corpus = self.config.index_corpus or find_file(Path(self.summaries["evaluate"]["eval_dirs"][0]), "corpus.jsonl")
        encoder = Encoder.load(model_dir)
        self._add_results_to_card(model_dir, encoder)
        index = VectorIndex.create(folder / "index", encoder, IndexSettings(), model=str(model_dir))
        report = index.add(corpus_documents(corpus), show_progress=True)
        documents, chunks = index.num_documents, index.num_chunks
        index.close()
        example = "parse command line arguments"
        if self.config.index_corpus is None:  # a query of the split whose corpus was indexed
            eval_dir = Path(self.summaries["evaluate"]["eval_dirs"][0])
            example = next(iter(load_queries(find_file(eval_dir, "queries.jsonl")).values()), example)[:80]
        commands = {
            "search": f"e5kit search {folder / 'index'} {shlex.quote(example)}",
            "serve": f"e5kit serve --model {model_dir} --index {folder / 'index'}",
        }
        self.log(f"  model: {model_dir}\n  index: {documents} documents, {chunks} chunks ({report})")
        return {"model": str(model_dir), "index": str(folder / "index"), "documents": documents, "chunks": chunks, "commands": commands}

    def _add_results_to_card(self, model_dir: Path, encoder) -> None:
        """Put the evaluate stage's scores of this model into its card's model-index (``e5kit eval card``)."""
        from e5kit.evaluation.cache import weights_hash
        from e5kit.evaluation.results import read_results, results_of_model
        from e5kit.model_card import with_results

        measured = results_of_model(read_results(self.stage_dir("evaluate") / "results"), weights_hash(encoder))
        if not measured:  # an evaluate stage kept from an earlier run of other weights
            self.log("  model card: the evaluate stage holds no results of these weights; none added")
            return
        readme = model_dir / "README.md"
        readme.write_text(with_results(readme.read_text(encoding="utf-8"), measured), encoding="utf-8")
        self.log(f"  model card: {len(measured)} evaluation results in its model-index")


def results_table(rows: list[dict[str, Any]], heldout: list[str] = ()) -> str:
    """Markdown table of retrieval results (x100), one row per (data set, model), then each model's
    unweighted average over the ``heldout`` data folders when there are several (the recipe's bar)."""
    lines = ["| data set | model | nDCG@10 | Recall@100 |", "|---|---|---|---|"]
    lines += [f"| {r['dataset']} | {r['model']} | {100 * r['ndcg_at_10']:.1f} | {100 * r['recall_at_100']:.1f} |" for r in rows]
    if len(heldout) > 1:
        for model in dict.fromkeys(r["model"] for r in rows):
            split = [r for r in rows if r["model"] == model and r["data"] in heldout]
            ndcg, recall = (100 * sum(r[key] for r in split) / len(split) for key in ("ndcg_at_10", "recall_at_100"))
            lines.append(f"| held-out average ({len(split)} splits) | {model} | {ndcg:.1f} | {recall:.1f} |")
    return "\n".join(lines)
