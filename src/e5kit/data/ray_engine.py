"""Ray Data engine for curation: the same per-shard function, scheduled across a Ray cluster.

Each shard task travels as JSON, runs ``process_shard`` on a Ray worker (one CPU each) and returns its
counts; outputs go to the shared ``work/`` folder (use a shared filesystem on a multi-node cluster).
The global dedup pass then runs on the driver exactly as with the local engine, so both engines write
identical pair shards.
"""

from __future__ import annotations

import json
from typing import Any

from e5kit.data.curate import ShardTask, process_shard


def _process_row(row: dict[str, Any]) -> dict[str, Any]:
    counts = process_shard(ShardTask.model_validate_json(row["task"]))
    return {"index": row["index"], "counts": json.dumps(counts)}


def run_ray(tasks: list[ShardTask], workers: int) -> list[dict[str, Any]]:
    """Process ``tasks`` with Ray Data on ``workers`` CPUs (a local Ray instance unless one is running).

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
