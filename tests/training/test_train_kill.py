"""kill -9 never corrupts pre-training (issue 14, items 3 and 5): ``e5kit pretrain`` killed at a seeded
random point (after a step, while a checkpoint is written, while the final model is saved), then run
with ``--resume``, ends with the uninterrupted run's per-step metrics and bit-identical final weights,
and no half-written ``final/`` is ever left for a later stage to load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from kill_points import KillPoint, at_seeded_call, run_killed, seeded_points
from safetensors.torch import load_file
from typer.testing import CliRunner

from e5kit.cli import app
from e5kit.encoder import Encoder

STEPS = 6
#: (point, when, calls it gets in one run of STEPS steps with checkpoints every 2) for the seeded draws:
#: a step logged, a checkpoint's state written but not renamed into place, a checkpoint or the final
#: model staged but not renamed into place, the final model's weights written but not its tokenizer.
POINTS = [
    ("e5kit.training.metrics:MetricsLog.log", "after", STEPS),
    ("torch:save", "after", STEPS // 2),
    ("e5kit.io.files:AtomicFolder.commit", "before", STEPS // 2 + 1),
    ("transformers.modeling_utils:PreTrainedModel.save_pretrained", "after", 1),
]
#: Drawn by default; the rest, and more seeds, run with the slow tests.
FAST_POINTS = ("e5kit.training.metrics:MetricsLog.log", "transformers.modeling_utils:PreTrainedModel.save_pretrained")


def pretrain_argv(model: Path, data: Path, output_dir: Path) -> list:
    settings = {
        "init_model": model, "data.paths": f"[{data}]", "output_dir": output_dir, "max_steps": STEPS, "checkpoint_every": 2,
        "keep_checkpoints": 2, "batch_size": 4, "chunk_size": 3, "lr": "1e-3", "warmup_steps": 1, "symmetric": True, "seed": 7,
    }
    return ["pretrain", *[part for key, value in settings.items() for part in ("--set", f"{key}={value}")]]


def cli(*argv) -> None:
    result = CliRunner().invoke(app, [str(arg) for arg in argv])
    assert result.exit_code == 0, result.output


def steps(output_dir: Path) -> list[dict]:
    """Per-step metrics that do not depend on the machine's speed."""
    records = map(json.loads, (output_dir / "metrics.jsonl").read_text().splitlines())
    return [{key: record[key] for key in ("step", "loss", "lr", "grad_norm", "sources")} for record in records]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_bert_dir) -> tuple[Path, Path]:
    """Pair shards (two sources, small enough to wrap around) and an uninterrupted run on them."""
    folder = tmp_path_factory.mktemp("pretrain-kill")
    data = folder / "pairs"
    data.mkdir()
    words = "cell protein gene cancer disease study python file data model search index vector cat dog".split()
    for source, count in (("alpha", 9), ("beta", 7)):
        rows = [{"query": f"{words[i % 15]} {words[(3 * i) % 15]}", "passage": f"{words[i % 15]} is about {words[(5 * i + 1) % 15]} {i}", "source": source} for i in range(count)]
        (data / f"{source}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed and resumed runs: another thread count sums in another order
    try:
        cli(*pretrain_argv(tiny_bert_dir, data, folder / "straight"))
    finally:
        torch.set_num_threads(threads)
    return data, folder / "straight"


def check_killed_pretrain(kill: KillPoint, tmp_path: Path, tiny_bert_dir: Path, uninterrupted: tuple[Path, Path]) -> None:
    data, straight = uninterrupted
    killed = tmp_path / "killed"
    # Given a run killed at the point: no final model claims to be complete
    run_killed(pretrain_argv(tiny_bert_dir, data, killed), kill)
    assert not (killed / "final").exists()
    # When it is run again with --resume
    cli(*pretrain_argv(tiny_bert_dir, data, killed), "--resume")
    # Then the per-step metrics and the final weights equal the uninterrupted run's, bit for bit
    assert steps(killed) == steps(straight) and len(steps(killed)) == STEPS
    resumed, expected = load_file(killed / "final" / "model.safetensors"), load_file(straight / "final" / "model.safetensors")
    assert resumed.keys() == expected.keys() and all(resumed[name].equal(expected[name]) for name in resumed)
    # And the final folder is a whole model, with no temporary folder of the killed run left beside it
    assert Encoder.load(killed / "final", device="cpu").dimension == 32
    assert not [path for path in killed.rglob("*") if path.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "point", [point if point[0] in FAST_POINTS else pytest.param(point, marks=pytest.mark.slow) for point in POINTS],
    ids=lambda point: f"{point[1]}-{point[0].rsplit('.', 1)[-1]}",
)
def test_pretrain_killed_at_each_point_resumes_to_the_uninterrupted_weights(point, tmp_path, tiny_bert_dir, uninterrupted):
    check_killed_pretrain(at_seeded_call(0, *point), tmp_path, tiny_bert_dir, uninterrupted)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 9))
def test_pretrain_killed_at_more_seeded_points(seed, tmp_path, tiny_bert_dir, uninterrupted):
    check_killed_pretrain(seeded_points(seed, POINTS), tmp_path, tiny_bert_dir, uninterrupted)
