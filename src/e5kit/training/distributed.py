"""Cross-process training under torchrun: process group, all-gather with gradient, one gradient all-reduce.

Every process holds ``batch_size / world_size`` pairs of the global batch. Embeddings are gathered with
gradient, so each query scores against the passages of the whole global batch, and the gradient of a
remote embedding flows back to the process that computed it (the all-gather's backward is a
reduce-scatter that sums the contributions of all processes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from e5kit.processes import join_process_group


@dataclass(frozen=True)
class ProcessGroup:
    """Where this process sits: ``rank`` of ``world_size`` (1 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on the process that writes files (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_process_group(device_type: str) -> ProcessGroup:
    """Join the process group torchrun set up (nccl on CUDA, gloo on CPU), once per process (``e5kit.processes.join_process_group``: left at exit, never between stages); a no-op for one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return ProcessGroup()
    join_process_group("nccl" if device_type == "cuda" else "gloo")
    return ProcessGroup(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward hands each process the summed gradient of its own rows.

    Not ``torch.distributed.nn.functional.all_gather`` (issue 15 item 5 asked for it if its equivalence
    test passes): with it, tests/training/test_train_distributed.py's loss and gradients still equal one
    process's (torch 2.13, gloo), but on gloo its backward emulates reduce-scatter with an all-to-all of
    ``world_size`` scatter calls instead of this one all-reduce per gathered matrix, and the test's
    collective accounting fails: ``assert result["other_all_reduces"] == [10 * 32] * ...`` ->
    ``assert [] == [320]``. The equivalence tests stay as they are, so this function stays.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rank, ctx.world_size = rank, world_size
        return torch.cat(parts, dim=0)  # (world_size * b, ...)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        if dist.get_backend() == "gloo":  # gloo has no reduce-scatter
            dist.all_reduce(grad)
            return grad.chunk(ctx.world_size)[ctx.rank], None, None
        local = torch.empty_like(grad.chunk(ctx.world_size)[ctx.rank])
        dist.reduce_scatter_tensor(local, grad)
        return local, None, None


def gather_with_grad(tensor: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
    """Concatenate ``tensor`` (b, ...) from all processes in rank order into (world_size * b, ...), keeping autograd."""
    if not group.distributed:
        return tensor
    return _GatherWithGrad.apply(tensor, group.rank, group.world_size)


def gather_no_grad(tensor: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
    """Concatenate ``tensor`` from all processes in rank order (no gradient, e.g. text ids)."""
    if not group.distributed:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(group.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def average_gradients(parameters: list[torch.nn.Parameter], group: ProcessGroup, scalars: torch.Tensor) -> torch.Tensor:
    """Average gradients (in place) and ``scalars`` (e.g. the loss) over processes with one all-reduce.

    Returns:
        The averaged ``scalars``.
    """
    if not group.distributed:
        return scalars
    grads = [parameter.grad for parameter in parameters if parameter.grad is not None]
    flat = torch.cat([grad.reshape(-1) for grad in grads] + [scalars.reshape(-1).to(grads[0].dtype)])
    dist.all_reduce(flat)
    flat /= group.world_size
    position = 0
    for grad in grads:
        grad.copy_(flat[position : position + grad.numel()].view_as(grad))
        position += grad.numel()
    return flat[position:].view_as(scalars)


def barrier(group: ProcessGroup) -> None:
    """Wait for all processes (e.g. until rank 0 has written a checkpoint)."""
    if group.distributed:
        dist.barrier()
