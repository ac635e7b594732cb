"""``e5kit ablate``: named variants of the E5 pipeline, run with shared stages and compared on held-out data.

A variant is a set of overrides of the consistency-filter and pre-training configs over the run's
base settings. The runner curates once, cuts the held-out splits once (``e5kit holdout``), runs one
consistency filter per distinct filter setting and one pre-training per distinct (filter, training)
setting, then evaluates every trained model, the start model and BM25 on every held-out split and
each extra BEIR folder. The steps are the library's stages (``e5kit.stage``), each in its own folder
named by a hash of its settings and finished by the one ``report.json`` marker (a row's evaluation, one
``e5kit eval retrieval`` stage per data set: ``results/stages/retrieval__<data set>__test.json`` in its
folder), so a rerun skips what finished and two variants that share a step share its folder.

A variant's consistency filter may be judged by another variant's trained model (``model:
variant:<name>``), as E5 filtered with a model first trained on the noisy pairs.

Outputs in ``workdir``: ``results.json`` (every score, per-source keep rates of each filter, each
comparison), ``results.md`` (variant x data set table, comparisons beside the paper's figures) and
``results.png`` (the table as a heat map).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from e5kit.hub import DEFAULT_MODEL
from e5kit.io.files import AtomicFile, unique_names, write_text_atomic
from e5kit.pipeline import (
    check_inputs,
    check_stage_sections,
    consistency_stage,
    curate_stage,
    evaluate_retrieval,
    holdout_stage,
    merge_settings,
    pretrain_stage,
    run_passed_on,
    run_pretrain,
)
from e5kit.stage import Stage, run_stage, run_step, settings_fingerprint

#: Consistency ``model`` values of this form name another variant whose trained model judges the pairs.
VARIANT_REFERENCE = "variant:"
BM25_ROW = "BM25"
START_ROW = "start model"


class Variant(BaseModel):
    """One variant of the pipeline.

    Attributes:
        name: Row label in the tables (unique).
        description: What the variant changes, for the report.
        consistency: Overrides of the base consistency settings (``{"enabled": false}``: no filter;
            ``model: variant:<name>``: judged by that variant's trained model).
        pretrain: Overrides of the base pre-training settings (batch_size, max_steps, tau, prompts,
            source_homogeneous, data.source_weights...).
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    consistency: dict[str, Any] = {}
    pretrain: dict[str, Any] = {}


class Comparison(BaseModel):
    """Two rows compared on the held-out average, with the paper's figure beside ours.

    Attributes:
        name: What is compared (e.g. "consistency filter vs none").
        baseline: Variant name, or ``start model`` / ``BM25``.
        variant: Variant name expected to score higher, per the paper.
        paper: The paper's figures for the same comparison (e.g. "34.9 -> 40.7, BEIR avg, 1M random pairs").
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    baseline: str
    variant: str
    paper: str = ""


class AblationConfig(BaseModel):
    """The ablation run.

    Attributes:
        workdir: Folder of every step's output and the results.
        model: Start model of every variant (path, bundled name or Hub id).
        sources: Curation sources (``e5kit curate`` format).
        curate: Overrides of the curation config (filters, workers...).
        holdout: Overrides of the held-out split step (fraction, max_queries, min_queries...).
        consistency: Base consistency-filter settings, under each variant's overrides.
        pretrain: Base pre-training settings, under each variant's overrides.
        eval_data: Extra BEIR folders every row is evaluated on (e.g. SciFact), besides the held-out splits.
        variants: The variants (at least one).
        comparisons: Pairs of rows to report side by side with the paper's figures.
        nproc_per_node: Processes per pre-training run (torchrun above 1).
        seed: Seed of every step.
    """

    model_config = ConfigDict(extra="forbid")

    workdir: Path = Path("e5kit-ablation")
    model: str = DEFAULT_MODEL
    sources: list[dict[str, Any]] = Field(min_length=1)
    curate: dict[str, Any] = {}
    holdout: dict[str, Any] = {}
    consistency: dict[str, Any] = {}
    pretrain: dict[str, Any] = {}
    eval_data: list[Path] = []
    variants: list[Variant] = Field(min_length=1)
    comparisons: list[Comparison] = []
    nproc_per_node: int = Field(default=1, ge=1)
    seed: int = 13

    @model_validator(mode="after")
    def _names_resolve(self) -> AblationConfig:
        names = [variant.name for variant in self.variants]
        repeated = sorted(name for name, count in Counter(names).items() if count > 1)
        if repeated:
            raise ValueError(f"variants: repeated name(s) {', '.join(repeated)}")
        reserved = {BM25_ROW, START_ROW} & set(names)
        if reserved:
            raise ValueError(f"variants: {', '.join(sorted(reserved))} is a row of its own; name the variant differently")
        for index, variant in enumerate(self.variants):
            judge = str(variant.consistency.get("model") or "")
            if judge.startswith(VARIANT_REFERENCE) and judge[len(VARIANT_REFERENCE):] not in names:
                raise ValueError(f"variants.{index}.consistency.model: no variant named {judge[len(VARIANT_REFERENCE):]!r}")
        check_stage_sections(curate=self.curate, sources=self.sources, holdout=self.holdout, consistency=self.consistency, pretrain=self.pretrain)
        for index, variant in enumerate(self.variants):
            check_stage_sections(
                consistency=merge_settings(self.consistency, variant.consistency), pretrain=merge_settings(self.pretrain, variant.pretrain),
                where=f"variants.{index} ({variant.name})",
            )
        rows = set(names) | {BM25_ROW, START_ROW}
        for index, comparison in enumerate(self.comparisons):
            for field in ("baseline", "variant"):
                if getattr(comparison, field) not in rows:
                    raise ValueError(f"comparisons.{index}.{field}: {getattr(comparison, field)!r} is not a variant, {START_ROW!r} or {BM25_ROW!r}")
        return self


def _source_counts(pairs: str) -> Counter:
    """Pairs per source in a pair dataset (shards, or a keep-mask's kept rows)."""
    from e5kit.data.shards import count_sources
    from e5kit.io.pairs import resolve_pair_shards

    counts: Counter = Counter()
    for shard in resolve_pair_shards([pairs]):
        counts.update(count_sources(shard.path, shard.keep))
    return counts


class Ablation:
    """Runs the variants of an :class:`AblationConfig`, sharing every step two variants have in common.

    Args:
        config: The run's settings.
        force: Redo every step even when it finished before.
        log: Where progress lines go.
    """

    def __init__(self, config: AblationConfig, *, force: bool = False, log: Callable[[str], None] = print) -> None:
        self.config = config
        self.force = force
        self.log = log
        self.workdir = config.workdir
        self.trained: dict[str, dict[str, Any]] = {}
        self.filtered: dict[str, dict[str, Any]] = {}
        self.seconds: dict[str, float] = {}
        #: Each distinct step once (two variants sharing a filter share its folder and its marker's fingerprint).
        self.distinct_seconds: dict[tuple[str, str], float] = {}

    def _record(self, label: str, *reports: dict[str, Any]) -> dict[str, Any]:
        """Count the time of a step (of one or more stages, e.g. a row's evaluation per data set) under ``label``;
        returns the last report."""
        # A step reused from an earlier run reports the time it took then, so the total is the grid's cost.
        for report in reports:
            self.distinct_seconds[(report["stage"], report["fingerprint"])] = float(report.get("seconds", 0.0))
        self.seconds[label] = sum(float(report.get("seconds", 0.0)) for report in reports)
        return reports[-1]

    def _stage(self, stage: Stage, label: str, upstream: str = "") -> dict[str, Any]:
        return self._record(label, run_stage(stage, force=self.force, log=self.log, label=label, upstream=upstream, owns_folder=True))

    def _step(self, folder: Path, name: str, fingerprint: str, action: Callable[[], dict[str, Any]], label: str,
              outputs: dict[str, Path] | None = None) -> dict[str, Any]:
        report = run_step(folder, name, fingerprint, action, force=self.force, log=self.log, label=label, owns_folder=True, outputs=outputs)
        return self._record(label, report)

    def check(self) -> None:
        """Check the inputs curation will read, before any step runs.

        Raises:
            ValueError: a missing or unreadable input, naming it.
        """
        check_inputs(self.config.sources, self.config.curate)

    def run(self) -> dict[str, Any]:
        """Run every step (after :meth:`check`); returns the results (also written to ``workdir/results.json``)."""
        self.check()
        config = self.config
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Curation and the split are redone when their settings change, and every later step's folder is named
        # by a hash that includes the split's, so none of them is reused across a change of the data.
        curated = self._stage(curate_stage(self.workdir / "curate", config.sources, config.curate, config.seed), "curate")
        held = self._stage(holdout_stage(self.workdir / "holdout", curated["outputs"]["pairs"], config.holdout, config.seed), "holdout")
        # Every later step's folder is named by a hash that includes the split's, so none is reused across a change of the data.
        self.data_key = held["fingerprint"]
        heldout_dirs = [Path(d) for d in held["eval_dirs"]]
        if not heldout_dirs:
            raise ValueError("holdout: no source had enough distinct queries for a held-out split; lower holdout.min_queries")
        eval_dirs = heldout_dirs + list(config.eval_data)
        rows: list[dict[str, Any]] = []
        for label, model in ((BM25_ROW, "bm25"), (START_ROW, config.model)):
            rows += self._evaluate(label, model, eval_dirs)
        for variant in self._in_dependency_order():
            self._train(variant, held["outputs"]["pairs"])
            rows += self._evaluate(variant.name, self.trained[variant.name]["model"], eval_dirs)
            results = self._write(rows, heldout_dirs, held)  # partial tables while later variants train
        self.log(results_markdown(results))
        return results

    def _evaluate(self, label: str, model: str, eval_dirs: list[Path]) -> list[dict[str, Any]]:
        """One row's scores, in a folder of its own (an ``e5kit eval retrieval`` stage per data set, whose inputs
        include the model's weights): a rerun or a new variant never re-evaluates a finished row, a model
        retrained in place (--force) is evaluated again."""
        folder = self.workdir / "evaluate" / settings_fingerprint([self.data_key, model, [str(d) for d in eval_dirs]])
        reports = []

        def run(stage: Stage, dataset: str) -> dict[str, Any]:
            reports.append(run_stage(stage, force=self.force, log=self.log, label=f"evaluate {label} on {dataset}", upstream=self.data_key))
            return reports[-1]

        rows = evaluate_retrieval(folder, {label: model}, eval_dirs, run)
        self._record(f"evaluate {label}", *reports)
        for row in rows:
            self.log(f"  {row['dataset']}: {label} nDCG@10 {100 * row['ndcg_at_10']:.1f}")
        return rows

    def _write(self, rows: list[dict[str, Any]], heldout_dirs: list[Path], held: dict[str, Any]) -> dict[str, Any]:
        results = self._results(rows, [str(d) for d in heldout_dirs], held)
        write_text_atomic(self.workdir / "results.json", json.dumps(results, indent=2, default=str))
        write_text_atomic(self.workdir / "results.md", results_markdown(results))
        results_plot(results, self.workdir / "results.png")
        return results

    def _in_dependency_order(self) -> list[Variant]:
        """Variants ordered so a filter judged by another variant's model runs after that variant trained."""
        by_name = {variant.name: variant for variant in self.config.variants}
        ordered: list[Variant] = []
        visiting: set[str] = set()

        def visit(variant: Variant) -> None:
            if variant in ordered:
                return
            if variant.name in visiting:
                raise ValueError(f"variants: {variant.name!r} is judged, through consistency.model, by a variant that depends on it")
            visiting.add(variant.name)
            judge = str(variant.consistency.get("model") or "")
            if judge.startswith(VARIANT_REFERENCE):
                visit(by_name[judge[len(VARIANT_REFERENCE):]])
            visiting.discard(variant.name)
            ordered.append(variant)

        for variant in self.config.variants:
            visit(variant)
        return ordered

    def _train(self, variant: Variant, pairs_dir: str) -> None:
        config = self.config
        consistency = merge_settings(config.consistency, variant.consistency)
        judge = str(consistency.get("model") or "")
        if judge.startswith(VARIANT_REFERENCE):
            consistency["model"] = self.trained[judge[len(VARIANT_REFERENCE):]]["model"]
        filter_key = settings_fingerprint([self.data_key, config.model, consistency])
        folder = self.workdir / "consistency" / filter_key
        label = f"consistency {variant.name}"
        same = next((done for done in self.filtered.values() if done["key"] == filter_key), None)
        if same is not None:  # another variant's filter, run this session: shared as it is
            self.log(f"[{label}] the same step as an earlier variant's, skipped")
            filtered = self._record(label, same)
        elif (stage := consistency_stage(folder, pairs_dir, config.model, consistency, config.seed)) is None:
            filtered = self._record(label, run_passed_on(folder, "consistency", pairs_dir, settings_fingerprint([self.data_key, "no filter"]),
                                                         force=self.force, log=self.log, label=label))
        elif (ranked := self._ranked_by_same_judge(consistency)) is not None:
            action = partial(_consistency_at_k, folder, ranked=ranked, k=int(consistency["k"]), log=self.log)
            filtered = self._step(folder, "consistency", stage.fingerprint(self.data_key), action, label, stage.outputs())
        else:
            filtered = self._stage(stage, label, self.data_key)
        self.filtered[variant.name] = {**filtered, "key": filter_key, "settings": consistency}
        pretrain = merge_settings(config.pretrain, variant.pretrain)
        train_key = settings_fingerprint([filter_key, config.model, pretrain, config.nproc_per_node])
        label = f"pretrain {variant.name}"
        trainer = pretrain_stage(self.workdir / "pretrain" / train_key, filtered["outputs"]["pairs"], config.model, pretrain, config.seed)
        self.trained[variant.name] = self._record(
            label, run_pretrain(trainer, config.nproc_per_node, force=self.force, log=self.log, label=label, owns_folder=True))

    def _ranked_by_same_judge(self, consistency: dict[str, Any]) -> Path | None:
        """The folder of a finished filter whose stored ranks give ``consistency``'s k without re-embedding.

        Two filters that differ only in k rank every pair identically (same judge, pool and settings),
        so the second reuses the first's ranks (``reapply_k``); multi-round filters retrain between
        rounds and are never reused.
        """
        if not consistency.get("enabled", True) or "k" not in consistency or int(consistency.get("iterations", 1)) != 1:
            return None
        without_k = {key: value for key, value in consistency.items() if key != "k"}
        for done in self.filtered.values():
            settings = done["settings"]
            if done.get("enabled", True) and {key: value for key, value in settings.items() if key != "k"} == without_k:
                if int(consistency["k"]) <= int(done["max_rank"]):  # done holds the filter's report
                    return self.workdir / "consistency" / done["key"]
        return None

    def _results(self, rows: list[dict[str, Any]], heldout: list[str], held: dict[str, Any]) -> dict[str, Any]:
        datasets = list(dict.fromkeys(row["data"] for row in rows))
        scores: dict[str, dict[str, float]] = {}
        for row in rows:
            scores.setdefault(row["model"], {})[row["data"]] = 100 * row["ndcg_at_10"]
        for by_data in scores.values():
            by_data["held-out average"] = sum(by_data[d] for d in heldout) / len(heldout)
        names = dict(zip(datasets, unique_names(datasets)))
        read = _source_counts(held["outputs"]["pairs"])
        keep_rates = {}
        for name, filtered in self.filtered.items():
            kept = _source_counts(filtered["outputs"]["pairs"]) if filtered.get("enabled", True) else read
            keep_rates[name] = {source: {"read": read[source], "kept": kept[source]} for source in sorted(read)}
        comparisons = []
        for comparison in self.config.comparisons:
            if comparison.baseline not in scores or comparison.variant not in scores:
                continue  # a partial table, written while a row of it is still training
            before = scores[comparison.baseline]["held-out average"]
            after = scores[comparison.variant]["held-out average"]
            comparisons.append({**comparison.model_dump(), "ours_before": before, "ours_after": after, "reproduced": after > before})
        return {
            "datasets": [names[d] for d in datasets],
            "heldout": [names[d] for d in heldout],
            "scores": {model: {names.get(d, d): value for d, value in by_data.items()} for model, by_data in scores.items()},
            "variants": {
                v.name: {"description": v.description, "model": self.trained[v.name]["model"], "steps": self.trained[v.name]["steps"],
                         "first_loss": self.trained[v.name]["first_loss"], "last_loss": self.trained[v.name]["last_loss"],
                         "consistency": self.filtered[v.name]["key"], "pretrain": Path(self.trained[v.name]["model"]).parent.name}
                for v in self.config.variants if v.name in self.trained
            },
            "keep_rates": keep_rates,
            "comparisons": comparisons,
            "step_seconds": dict(self.seconds),
            "total_seconds": sum(self.distinct_seconds.values()),
        }


def _consistency_at_k(folder: Path, *, ranked: Path, k: int, log: Callable[[str], None]) -> dict[str, Any]:
    """A consistency step from another step's stored ranks (same judge and settings, another k)."""
    from e5kit.data.consistency import SCORES_FILE, reapply_k

    for name in (SCORES_FILE, "report.json"):
        shutil.copyfile(ranked / name, folder / name)
    report = reapply_k(folder, k)
    log(f"  consistency filter (k={k}) kept {report['kept']} of {report['read']} pairs (ranks of {ranked.name}, not re-embedded)")
    return report


def results_markdown(results: dict[str, Any]) -> str:
    """The ablation's tables: nDCG@10 x100 per row and data set, keep rates, and comparisons beside the paper."""
    columns = results["heldout"] + ["held-out average"] + [d for d in results["datasets"] if d not in results["heldout"]]
    lines = ["nDCG@10 (x100) on each held-out split and extra data set:", "",
             "| row | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for model, by_data in results["scores"].items():
        lines.append(f"| {model} | " + " | ".join(f"{by_data[c]:.1f}" for c in columns) + " |")
    lines += ["", "Consistency filter keep rates per source (kept / read):", ""]
    sources = sorted({s for rates in results["keep_rates"].values() for s in rates})
    lines += ["| variant | " + " | ".join(sources) + " |", "|---|" + "---|" * len(sources)]
    for name, rates in results["keep_rates"].items():
        cells = [f"{rates[s]['kept']:,} / {rates[s]['read']:,}" if s in rates else "" for s in sources]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if results["comparisons"]:
        lines += ["", "| comparison | ours (held-out avg nDCG@10) | E5 paper | same direction |", "|---|---|---|---|"]
        for c in results["comparisons"]:
            lines.append(f"| {c['name']} ({c['baseline']} -> {c['variant']}) | {c['ours_before']:.1f} -> {c['ours_after']:.1f} | "
                         f"{c['paper']} | {'yes' if c['reproduced'] else 'no'} |")
    if "total_seconds" in results:
        slowest = sorted(results["step_seconds"].items(), key=lambda item: -item[1])[:3]
        lines += ["", f"Measured time: {results['total_seconds'] / 60:.1f} min, the sum of every distinct step's own time "
                  "(a step variants share counted once; a step reused from an earlier run counts the time it took then); longest: "
                  + ", ".join(f"{label} {seconds / 60:.1f} min" for label, seconds in slowest) + "."]
    return "\n".join(lines) + "\n"


def results_plot(results: dict[str, Any], path: Path) -> None:
    """The score table as a heat map: rows x data sets, each cell labelled with its nDCG@10 x100."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    columns = results["heldout"] + ["held-out average"] + [d for d in results["datasets"] if d not in results["heldout"]]
    rows = list(results["scores"])
    values = np.array([[results["scores"][r][c] for c in columns] for r in rows])
    figure, axes = plt.subplots(figsize=(1.4 * len(columns) + 3, 0.45 * len(rows) + 1.8))
    image = axes.imshow(values, cmap="viridis", aspect="auto")
    axes.set_xticks(range(len(columns)), labels=columns, rotation=30, ha="right")
    axes.set_yticks(range(len(rows)), labels=rows)
    middle = (values.max() + values.min()) / 2
    for i in range(len(rows)):
        for j in range(len(columns)):
            axes.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center", color="black" if values[i, j] > middle else "white", fontsize=9)
    figure.colorbar(image, ax=axes, label="nDCG@10 (x100)")
    axes.set_title("E5 ablations: nDCG@10 on held-out splits")
    figure.tight_layout()
    with AtomicFile(path) as staged:
        figure.savefig(staged.temporary, format="png", dpi=120)
    plt.close(figure)
