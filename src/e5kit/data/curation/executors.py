"""Where the shard tasks run: ``local`` (worker processes) or ``ray`` (Ray Data). Both call
``shard.process_shard`` per task and return its counts in task order, so both engines give identical
outputs; the global pass then runs in this process. This module imports the shard code, never the reverse.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from e5kit.data.curation import shard
from e5kit.data.curation.planner import ShardTask
from e5kit.processes import die_with_parent
from e5kit.progress import counting, progress_bar, set_count


# ------------------------------------------------------------------------------------------------ local
def _start_worker(parent: int, records) -> None:
    """A curation worker: it ends with ``parent`` and adds to its records bar."""
    die_with_parent(parent)
    set_count(records)


def run_local(tasks: list[ShardTask], workers: int) -> list[dict[str, Any]]:
    """Process shards in worker processes (in this process when one worker or one shard); the workers
    end with this process, even when it is killed with kill -9. Bars count the records read and the shards done."""
    with counting(desc="records", unit="record") as records:
        return _run_shards(tasks, workers, records)


def _run_shards(tasks: list[ShardTask], workers: int, records) -> list[dict[str, Any]]:
    if workers == 1 or len(tasks) <= 1:
        return [shard.process_shard(task) for task in progress_bar(tasks, desc="shards", unit="shard", show=len(tasks) > 1)]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # fork: spawn would re-run the caller's script in every worker, so a script without an
    # ``if __name__ == "__main__"`` guard (a quickstart) would fail. Workers never call into torch.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)), mp_context=multiprocessing.get_context(method), initializer=_start_worker, initargs=(os.getpid(), records)
    ) as pool:
        futures = {pool.submit(shard.process_shard, task): index for index, task in enumerate(tasks)}
        results: list[dict[str, Any] | None] = [None] * len(tasks)
        for future in progress_bar(as_completed(futures), total=len(tasks), desc="shards", unit="shard"):
            results[futures[future]] = future.result()
    return results


# -------------------------------------------------------------------------------------------------- ray
def _process_row(row: dict[str, Any]) -> dict[str, Any]:
    counts = shard.process_shard(ShardTask.model_validate_json(row["task"]))
    return {"index": row["index"], "counts": json.dumps(counts)}


def run_ray(tasks: list[ShardTask], workers: int) -> list[dict[str, Any]]:
    """Process ``tasks`` with Ray Data on ``workers`` CPUs (a local Ray instance unless one is running).

    Each task travels as JSON and runs on a Ray worker (one CPU each); outputs go to the shared ``work/``
    folder (use a shared filesystem on a multi-node cluster).

    Raises:
        RuntimeError: when Ray is not installed.
    """
    try:
        import ray
    except ImportError as error:
        raise RuntimeError("engine 'ray' needs Ray Data: pip install 'e5kit[ray]'") from error
    if not tasks:
        return []
    if not ray.is_initialized():
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    rows = [{"index": index, "task": task.model_dump_json()} for index, task in enumerate(tasks)]
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
    processed = dataset.map(_process_row, num_cpus=1, concurrency=min(workers, len(rows)))
    results = sorted(processed.take_all(), key=lambda row: row["index"])
    return [json.loads(row["counts"]) for row in results]


#: Engine name (``CurateConfig.engine``) -> executor.
EXECUTORS: dict[str, Callable[[list[ShardTask], int], list[dict[str, Any]]]] = {"local": run_local, "ray": run_ray}
