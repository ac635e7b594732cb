"""The quickstart: the whole E5 pipeline chained stage by stage in one work folder.

corpus -> curate -> holdout -> consistency -> pretrain -> evaluate -> export + index. Curate, holdout,
consistency, pretrain, the evaluation and the index build are the library's :class:`e5kit.stage.Stage`
objects (the same as their own ``e5kit`` commands), chained with :func:`e5kit.stage.run_stage`; each writes
into ``<workdir>/<stage>/`` and finishes by writing the one marker, ``<workdir>/<stage>/report.json`` (an
evaluation, one per data set, ``<workdir>/evaluate/results/stages/retrieval__<data set>__test.json``), whose
fingerprint covers its settings, its inputs and the stages before it. A rerun skips stages finished under the
same fingerprint, ``force`` redoes them. The evaluation feeds no later stage, so a changed evaluation
setting redoes it alone. Without a config the chain runs offline on the standard library's documentation with the
bundled all-MiniLM-L6-v2; a YAML config swaps in real dumps, hub models and GPUs (configs/quickstart_*.yaml).
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from e5kit.hub import DEFAULT_MODEL
from e5kit.io.files import write_text_atomic
from e5kit.processes import die_with_parent
from e5kit.serving.index_stage import IndexConfig, IndexStage
from e5kit.stage import REPORT_FILE, UPSTREAM_ENV, Stage, run_stage, run_step, settings_fingerprint, write_marker

STAGES = ("corpus", "curate", "holdout", "consistency", "pretrain", "evaluate", "index")
#: The trained model's row in the results table.
PRETRAINED = "e5kit pre-trained"


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
        evaluate: Overrides of the retrieval evaluation (``e5kit eval retrieval``: batch_size, max_length,
            top_k...); its models, data and results and cache folders are the run's.
        index: Overrides of the index build (``e5kit index build``: kind, window, overlap...); its corpus,
            model and output folder are the run's.
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
    evaluate: dict[str, Any] = {}
    index: dict[str, Any] = {}
    nproc_per_node: int = Field(default=1, ge=1)
    eval_data: list[Path] = []
    index_corpus: Path | None = None
    seed: int = 13

    @model_validator(mode="after")
    def _stage_sections_valid(self) -> QuickstartConfig:
        check_stage_sections(curate=self.curate, sources=self.sources or None, holdout=self.holdout, consistency=self.consistency,
                             pretrain=self.pretrain, evaluate=self.evaluate, index=self.index)
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
    consistency: dict[str, Any] | None = None, pretrain: dict[str, Any] | None = None, evaluate: dict[str, Any] | None = None,
    index: dict[str, Any] | None = None, where: str = "",
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
    from e5kit.evaluation.config import RetrievalConfig
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
    if evaluate is not None:
        checks.append(("evaluate", RetrievalConfig, {**evaluate, "models": [placeholder], "data": placeholder}))
    if index is not None:
        checks.append(("index", IndexConfig, {**index, "corpus": placeholder, "out": placeholder, "model": placeholder}))
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


def curate_stage(folder: Path, sources: list[dict[str, Any]], overrides: dict[str, Any], seed: int) -> Stage:
    """``e5kit curate`` of ``sources`` with the offline defaults under ``overrides``, into ``folder``."""
    from e5kit.data.curation import CurateConfig, CurateStage

    settings = merge_settings(DEFAULT_CURATE, overrides)
    settings.update(output_dir=str(folder), seed=seed, sources=sources)
    return CurateStage(CurateConfig.model_validate(settings))


def holdout_stage(folder: Path, pairs_dir: str, overrides: dict[str, Any], seed: int) -> Stage:
    """``e5kit holdout`` of curated pairs: per-source held-out BEIR splits and the training pairs left."""
    from e5kit.data.holdout import HoldoutConfig, HoldoutStage

    settings = {**{k: v for k, v in overrides.items() if k != "enabled"}, "pairs": [pairs_dir], "output_dir": str(folder), "seed": seed}
    return HoldoutStage(HoldoutConfig.model_validate(settings))


def consistency_stage(folder: Path, pairs_dir: str, model: str, overrides: dict[str, Any], seed: int) -> Stage | None:
    """The consistency filter with the defaults under ``overrides``; None when they say ``enabled: false``."""
    from e5kit.data.consistency import ConsistencyConfig, ConsistencyStage
    from e5kit.training.trainer import pretrain_on

    settings = merge_settings(DEFAULT_CONSISTENCY, overrides)
    if not settings.pop("enabled"):
        return None
    settings["model"] = settings.get("model") or model  # a preliminary model of its own, if given
    settings.update(pairs=[pairs_dir], output_dir=str(folder), seed=seed)
    return ConsistencyStage(ConsistencyConfig.model_validate(settings), train_fn=pretrain_on)


def pretrain_stage(folder: Path, pairs_dir: str, model: str, overrides: dict[str, Any], seed: int) -> Stage:
    """Continued pre-training of ``model`` on ``pairs_dir`` with the defaults under ``overrides``, into ``folder``."""
    from e5kit.encoder.model_format import read_model_dir
    from e5kit.evaluation.retrieval import retrieval_evaluator
    from e5kit.hub import resolve_model_dir
    from e5kit.training.config import PretrainConfig
    from e5kit.training.trainer import PretrainStage

    settings = merge_settings(DEFAULT_PRETRAIN, overrides)
    # Keep the starting model's own prefix convention (none for all-MiniLM) unless the config sets one.
    settings.setdefault("prompts", read_model_dir(resolve_model_dir(model)).prompts)
    settings.update(init_model=model, output_dir=str(folder), seed=seed, data=merge_settings(settings.get("data", {}), {"paths": [pairs_dir]}))
    config = PretrainConfig.model_validate(settings)
    return PretrainStage(config, evaluator=retrieval_evaluator(config.eval_data) if config.eval_data else None)


def run_pretrain(stage: Stage, nproc_per_node: int, **options: Any) -> dict[str, Any]:
    """Run a pre-training stage (``run_stage``'s ``options``), under torchrun when ``nproc_per_node`` > 1."""
    if nproc_per_node == 1:
        return run_stage(stage, **options)
    from e5kit.training.checkpoint import list_checkpoints
    from e5kit.training.trainer import training_summary

    log, folder = options.get("log", print), stage.output_dir
    # The workers' own stage (`e5kit pretrain` under torchrun) fingerprints the same chain, so its marker and
    # started-with file are this step's (a killed launch resumes when the quickstart runs again).
    chain = settings_fingerprint([options.pop("upstream", ""), nproc_per_node])

    def launch() -> dict[str, Any]:
        config_path = folder / "pretrain.yaml"
        config_path.write_text(yaml.safe_dump(stage.config.model_dump(mode="json")), encoding="utf-8")
        resume = bool(list_checkpoints(folder / "checkpoints"))  # a killed run continues from its newest checkpoint
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
                   "-m", "e5kit", "pretrain", "--config", str(config_path), *(["--resume"] if resume else [])]
        log("  " + " ".join(command))
        # SIGTERM when this process ends, however it ends: torchrun then stops its own workers.
        subprocess.run(command, check=True, preexec_fn=functools.partial(die_with_parent, os.getpid(), signal.SIGTERM),
                       env={**os.environ, UPSTREAM_ENV: chain})
        return training_summary(folder, folder / "final", log)

    fingerprint = stage.fingerprint(chain)
    return run_step(folder, stage.name, fingerprint, launch, resumable=True, outputs=stage.outputs(), **options)


def run_passed_on(folder: Path, name: str, pairs: str, fingerprint: str, **options: Any) -> dict[str, Any]:
    """The marker of a stage that is switched off (``enabled: false``), handing the pairs before it to the
    next stage unchanged (``run_step``'s ``options``; the folder is the caller's)."""
    return run_step(folder, name, fingerprint, lambda: {"enabled": False}, owns_folder=True, outputs={"pairs": Path(pairs)}, **options)


def evaluate_retrieval(
    folder: Path, models: dict[str, str], eval_dirs: list[Path], run: Callable[[Stage, str], dict[str, Any]],
    overrides: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """nDCG@10 and Recall@100 of each labelled model (a path, a bundled name or ``bm25``) on each BEIR folder.

    Each folder is an ``e5kit eval retrieval`` stage (``overrides`` over its defaults) that ``run(stage, data
    set name)`` runs (the caller's :func:`run_stage`); results and embeddings are kept under ``folder`` (the
    cache per weights and data), so a model evaluated before is not encoded again. Returns one row per (data
    set, model), with the result file it came from.
    """
    from e5kit.evaluation.config import RetrievalConfig
    from e5kit.evaluation.results import EvalResult
    from e5kit.evaluation.runner import EvalStage, dataset_name

    rows = []
    for data in eval_dirs:
        settings = {**(overrides or {}), "models": list(models.values()), "data": data, "results_dir": folder / "results",
                    "cache_dir": folder / "cache"}
        report = run(EvalStage("retrieval", RetrievalConfig.model_validate(settings)), dataset_name(data))
        for label, path in zip(models, report["results"]):  # the stage's result files, in its models' order
            result = EvalResult.model_validate_json(Path(path).read_text(encoding="utf-8"))
            rows.append({"model": label, "dataset": result.dataset, "data": str(data), "ndcg_at_10": result.metrics["ndcg_at_10"],
                         "recall_at_100": result.metrics["recall_at_100"], "result": path})
    return rows


class ExportedIndexStage(IndexStage):
    """The quickstart's last step: the pre-trained model copied to ``<step>/model`` (the exported model the printed
    ``e5kit serve`` command serves, and the one the index records), and ``e5kit index build`` of the corpus with
    it into ``<step>/index``. Its marker is ``<step>/report.json``, as every quickstart step's. The pre-trained
    model is its input, not the copy, which each build writes afresh.

    Args:
        config: The build's settings: ``model`` is ``<step>/model``, ``out`` is ``<step>/index``.
        source_model: The pre-trained model folder.
    """

    def __init__(self, config: IndexConfig, source_model: Path) -> None:
        from e5kit.encoder import Encoder

        # The step folder is the quickstart's, so an index left in it is this step's to replace.
        super().__init__(config, lambda name, backend: Encoder.load(name, backend=backend), replace=True)
        self.source_model = source_model

    @property
    def marker(self) -> Path:
        return self.output_dir.parent / REPORT_FILE

    def inputs(self) -> list[Path]:
        return [self.config.corpus, self.source_model]

    def outputs(self) -> dict[str, Path]:
        return {**super().outputs(), "model": Path(self.config.model)}

    def execute(self, log: Callable[[str], None]) -> dict[str, Any]:
        model_dir = Path(self.config.model)
        shutil.rmtree(model_dir, ignore_errors=True)  # a copy a killed build left
        shutil.copytree(self.source_model, model_dir)
        return super().execute(log)


def index_stage(folder: Path, corpus: Path, model: str, overrides: dict[str, Any]) -> Stage:
    """The index of ``corpus`` built with the pre-trained ``model`` (:class:`ExportedIndexStage`), ``overrides``
    over ``e5kit index build``'s defaults, in ``folder``."""
    settings = {**overrides, "corpus": corpus, "out": folder / "index", "model": str(folder / "model")}
    return ExportedIndexStage(IndexConfig.model_validate(settings), Path(model))


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
        """Run every stage (after :meth:`check`); returns each stage's report (its ``report.json`` marker)."""
        self.check()
        self.workdir.mkdir(parents=True, exist_ok=True)
        upstream = ""
        for stage in STAGES:
            # Each stage's fingerprint includes the one before, so a change redoes everything after it; the
            # evaluation feeds no later stage (the index reads the pre-trained model and a corpus), so a changed
            # evaluation setting redoes it alone.
            self.summaries[stage] = getattr(self, f"_{stage}")(self.stage_dir(stage), upstream)
            if stage != "evaluate":
                upstream = self.summaries[stage]["fingerprint"]
        return self.summaries

    def _stage(self, stage: Stage, upstream: str) -> dict[str, Any]:
        return run_stage(stage, force=self.force, log=self.log, upstream=upstream, owns_folder=True)

    def _step(self, folder: Path, name: str, settings: Any, action: Callable[[], dict[str, Any]], upstream: str,
              outputs: dict[str, Path] | None = None) -> dict[str, Any]:
        """A step of the quickstart's own (no library stage), under the same marker rule."""
        return run_step(folder, name, settings_fingerprint([upstream, settings]), action, force=self.force, log=self.log,
                        owns_folder=True, outputs=outputs)

    def _passed_on(self, folder: Path, name: str, pairs: str, upstream: str) -> dict[str, Any]:
        return run_passed_on(folder, name, pairs, settings_fingerprint([upstream, {"skipped": pairs}]), force=self.force, log=self.log)

    # ------------------------------------------------------------------ stages
    def _corpus(self, folder: Path, upstream: str) -> dict[str, Any]:
        from e5kit.data.stdlib_corpus import build_stdlib_corpus

        def build() -> dict[str, Any]:
            if self.config.sources:
                return {"builtin": False}
            built = build_stdlib_corpus(folder, heldout=self.config.heldout_queries, seed=self.config.seed, limit=self.config.corpus_size)
            self.log(f"  {built.pairs} documented stdlib objects; {built.heldout} held out as test queries")
            return {"builtin": True, "pairs_path": str(built.pairs_path), "eval_dir": str(built.eval_dir),
                    "heldout_path": str(built.heldout_path), "pairs": built.pairs, "heldout": built.heldout}

        config = self.config.model_dump(mode="json")
        return self._step(folder, "corpus", [config[k] for k in ("sources", "heldout_queries", "corpus_size", "seed")], build, upstream)

    def _curate(self, folder: Path, upstream: str) -> dict[str, Any]:
        corpus = self.summaries["corpus"]
        overrides = self.config.curate
        if corpus["builtin"]:
            sources = [{"type": "generic", "name": "pydoc", "paths": [corpus["pairs_path"]]}]
            filters = overrides.get("filters", {})
            decontaminate = {"eval_paths": [corpus["heldout_path"]], **filters.get("decontaminate", {})}
            overrides = {**overrides, "filters": {**filters, "decontaminate": decontaminate}}
        else:
            sources = self.config.sources
        return self._stage(curate_stage(folder, sources, overrides, self.config.seed), upstream)

    def _holdout(self, folder: Path, upstream: str) -> dict[str, Any]:
        curated = self.summaries["curate"]["outputs"]["pairs"]
        if self.summaries["corpus"]["builtin"] or not self.config.holdout.get("enabled", True):
            return self._passed_on(folder, "holdout", curated, upstream)  # the corpus stage held out the built-in split
        return self._stage(holdout_stage(folder, curated, self.config.holdout, self.config.seed), upstream)

    def _consistency(self, folder: Path, upstream: str) -> dict[str, Any]:
        pairs = self.summaries["holdout"]["outputs"]["pairs"]
        stage = consistency_stage(folder, pairs, self.config.model, self.config.consistency, self.config.seed)
        return self._passed_on(folder, "consistency", pairs, upstream) if stage is None else self._stage(stage, upstream)

    def _pretrain(self, folder: Path, upstream: str) -> dict[str, Any]:
        stage = pretrain_stage(folder, self.summaries["consistency"]["outputs"]["pairs"], self.config.model, self.config.pretrain, self.config.seed)
        return run_pretrain(stage, self.config.nproc_per_node, force=self.force, log=self.log, upstream=upstream, owns_folder=True)

    def _evaluate(self, folder: Path, upstream: str) -> dict[str, Any]:
        heldout = self.summaries["holdout"].get("eval_dirs", [])
        eval_dirs = [Path(d) for d in heldout] + list(self.config.eval_data)
        if self.summaries["corpus"]["builtin"] and not self.config.eval_data:
            eval_dirs = [Path(self.summaries["corpus"]["eval_dir"])]
        models = {"BM25": "bm25", f"{self.config.model} (start)": self.config.model, PRETRAINED: self.summaries["pretrain"]["model"]}
        table_file = folder / "results.md"
        for gathered in (folder / REPORT_FILE, table_file):  # gone while the evaluations run: present means they finished
            gathered.unlink(missing_ok=True)
        reports, markers = [], []

        def run(stage: Stage, dataset: str) -> dict[str, Any]:
            label = "evaluate" if len(eval_dirs) == 1 else f"evaluate {dataset}"
            reports.append(run_stage(stage, force=self.force, log=self.log, upstream=upstream, label=label))
            markers.append(str(stage.marker))
            return reports[-1]

        rows = evaluate_retrieval(folder, models, eval_dirs, run, self.config.evaluate)
        table = results_table(rows, [str(Path(d)) for d in heldout])
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(table_file, table + "\n")
        # The step's report gathers its evaluations' rows; each evaluation is skipped or redone by its own marker.
        fingerprint = settings_fingerprint([report["fingerprint"] for report in reports])
        return write_marker(folder / REPORT_FILE, "evaluate", fingerprint, sum(report["seconds"] for report in reports),
                            {"results": folder / "results", "table": table_file},
                            {"rows": rows, "table": table, "eval_dirs": [str(d) for d in eval_dirs], "markers": markers})

    def _index(self, folder: Path, upstream: str) -> dict[str, Any]:
        from e5kit.io.beir import find_file, load_queries

        eval_dirs = self.summaries["evaluate"]["eval_dirs"]
        corpus = self.config.index_corpus or find_file(Path(eval_dirs[0]), "corpus.jsonl")
        stage = index_stage(folder, corpus, self.summaries["pretrain"]["model"], self.config.index)
        report = run_stage(stage, force=self.force, log=self.log, upstream=upstream, owns_folder=True)
        model_dir, index_dir = Path(report["outputs"]["model"]), Path(report["outputs"]["index"])
        self._add_results_to_card(model_dir)
        example = "parse command line arguments"
        if self.config.index_corpus is None:  # a query of the split whose corpus was indexed
            example = next(iter(load_queries(find_file(Path(eval_dirs[0]), "queries.jsonl")).values()), example)[:80]
        commands = {
            "search": f"e5kit search {index_dir} {shlex.quote(example)}",
            "serve": f"e5kit serve --model {model_dir} --index {index_dir}",
        }
        return {**report, "commands": commands}

    def _add_results_to_card(self, model_dir: Path) -> None:
        """Put the evaluate stage's scores of the pre-trained model into its exported copy's card (``e5kit eval
        card``), on every run: an evaluation redone alone (a changed evaluation setting) updates the card too."""
        from e5kit.evaluation.results import EvalResult
        from e5kit.model_card import with_results

        measured = [EvalResult.model_validate_json(Path(row["result"]).read_text(encoding="utf-8"))
                    for row in self.summaries["evaluate"]["rows"] if row["model"] == PRETRAINED]
        readme = model_dir / "README.md"
        card = readme.read_text(encoding="utf-8")
        updated = with_results(card, measured) if measured else card
        if updated != card:
            write_text_atomic(readme, updated)
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
