"""torchrun --nproc_per_node=2 (gloo, CPU): same loss and gradients as one process on the concatenated batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from e5kit.training.gradcache import GradCache

TORCHRUN = Path(sys.executable).with_name("torchrun")
TAU = 0.05

#: Each rank takes its half of the batch, runs GradCache with cross-process negatives, averages gradients
#: (counting all-reduces), and saves loss and gradients; then a short pretrain() run checks the trainer.
WORKER = """
import json, sys
import torch, torch.distributed as dist
from e5kit.encoder import Encoder
from e5kit.training import distributed
from e5kit.training.gradcache import GradCache
from e5kit.training.trainer import pretrain

model_dir, batch_path, out_dir = sys.argv[1], sys.argv[2], sys.argv[3]
torch.set_num_threads(1)
group = distributed.init_process_group("cpu")
encoder = Encoder.load(model_dir, device="cpu")
encoder.model.train()
for module in encoder.model.modules():
    if isinstance(module, torch.nn.Dropout):
        module.p = 0.0
batch = json.load(open(batch_path))
half = len(batch) // group.world_size
local = batch[group.rank * half:(group.rank + 1) * half]
all_reduced_sizes = []
all_reduce = dist.all_reduce
def counting_all_reduce(tensor, *args, **kwargs):
    all_reduced_sizes.append(tensor.numel())
    return all_reduce(tensor, *args, **kwargs)
dist.all_reduce = counting_all_reduce
for symmetric in (False, True):
    all_reduced_sizes.clear()
    encoder.model.zero_grad()
    cache = GradCache(encoder, chunk_size=3, tau=%(tau)r, symmetric=symmetric, mask_false_negatives=True,
                      query_max_length=64, passage_max_length=64, group=group)
    local_loss = cache.step([p["query"] for p in local], [p["passage"] for p in local])
    params = [p for p in encoder.model.parameters()]
    loss = distributed.average_gradients(params, group, torch.tensor([local_loss]))
    gradient_size = sum(p.grad.numel() for p in params if p.grad is not None) + 1  # + the loss
    torch.save({"loss": float(loss[0]), "gradient_all_reduces": all_reduced_sizes.count(gradient_size),
                "other_all_reduces": [size for size in all_reduced_sizes if size != gradient_size],
                "grads": {n: p.grad for n, p in encoder.model.named_parameters() if p.grad is not None}},
               f"{out_dir}/rank{group.rank}-symmetric{int(symmetric)}.pt")
dist.all_reduce = all_reduce
final = pretrain({"init_model": model_dir, "data": {"paths": [batch_path.replace("batch.json", "shard.jsonl")]},
                  "output_dir": f"{out_dir}/run", "max_steps": 2, "batch_size": 4, "chunk_size": 2,
                  "checkpoint_every": 1, "warmup_steps": 1}, show_progress=False)
print("final", final)
""" % {"tau": TAU}  # noqa: UP031 (the worker's code has braces of its own)


def test_two_processes_match_one_process_on_the_concatenated_batch(tmp_path, tiny_bert_dir, make_pairs, tiny_encoder):
    # Given a batch of 10 pairs in which a query text recurs across the two halves (a cross-process false negative)
    pairs = make_pairs(10, seed=9)
    pairs[7]["query"] = pairs[1]["query"]
    (tmp_path / "batch.json").write_text(json.dumps(pairs))
    (tmp_path / "shard.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    (tmp_path / "worker.py").write_text(WORKER)
    queries, passages = [p["query"] for p in pairs], [p["passage"] for p in pairs]
    # When two gloo processes each take half of the batch (with and without the symmetric loss)
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", str(tmp_path / "worker.py"), str(tiny_bert_dir), str(tmp_path / "batch.json"), str(tmp_path)]
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    encoder = tiny_encoder()
    for symmetric in (False, True):
        # and one process runs the whole batch
        encoder.model.zero_grad()
        cache = GradCache(encoder, chunk_size=4, tau=TAU, symmetric=symmetric, mask_false_negatives=True, query_max_length=64, passage_max_length=64)
        expected_loss = cache.step(queries, passages)
        expected = {n: p.grad for n, p in encoder.model.named_parameters() if p.grad is not None}
        # Then both ranks hold the single-process loss and gradients, after exactly one all-reduce
        for rank in (0, 1):
            result = torch.load(tmp_path / f"rank{rank}-symmetric{int(symmetric)}.pt")
            assert result["gradient_all_reduces"] == 1
            # (the only others: gloo's stand-in for reduce-scatter, per gathered embedding matrix the loss reads)
            assert result["other_all_reduces"] == [10 * 32] * (2 if symmetric else 1)
            assert result["loss"] == pytest.approx(expected_loss, abs=1e-5)
            assert result["grads"].keys() == expected.keys()
            for name, grad in result["grads"].items():
                torch.testing.assert_close(grad, expected[name], rtol=0, atol=1e-5, msg=f"rank {rank}: {name}")
    # and the trainer itself ran under torchrun, rank 0 writing the model and the metrics
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2
