"""Several processes (``torchrun``, ``accelerate launch``): which one writes, and waiting for each other.

Launchers set ``WORLD_SIZE``/``RANK``; ``distributed_shard`` is the one way to ask which process this is
once the group is up, ``all_reduce_sum`` the one way to add up over processes, and ``dataset_batches``
this process's share of rows. the process group is initialised through accelerate's
``PartialState`` (gloo on CPU, NCCL on GPUs), the same one the Trainer uses, so the stages' own
all-reduces (head and neuron importance) and the Trainer's DDP share it. Only the main process writes
the run folder; the others train alongside it and wait.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
import torch.distributed as dist
from accelerate import PartialState


def distributed_shard() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` unless torch.distributed is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes (accelerate launch / torchrun), so every rank takes the same decision."""
    if distributed_shard()[1] > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def dataset_batches(
    dataset: Sequence[Mapping],
    collate_fn: Callable[[list], Mapping[str, torch.Tensor]],
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    limit: int | None = None,
) -> Iterator[Mapping[str, torch.Tensor]]:
    """Batches of this rank's share (rows ``rank, rank + world_size, ...``) of the first ``limit`` rows.

    Indexing rows directly (no DataLoader) draws nothing from the random generators, so scoring in
    the middle of training leaves the training order and dropout untouched.
    """
    end = len(dataset) if limit is None else min(limit, len(dataset))
    rows = range(rank, end, world_size)
    for start in range(0, len(rows), batch_size):
        yield collate_fn([dataset[index] for index in rows[start : start + batch_size]])


def global_batches(
    dataset: Sequence[Mapping],
    collate_fn: Callable[[list], Mapping[str, torch.Tensor]],
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    limit: int | None = None,
) -> Iterator[tuple[Mapping[str, torch.Tensor], float]]:
    """This rank's part of each batch of ``batch_size`` consecutive rows of the first ``limit`` rows,
    with its share of the batch's rows: ``(batch, share)``.

    Global batch k is rows ``k·batch_size ...``; rank r takes its rows ``r, r + world_size, ...`` of
    it, so a quantity that is a mean over rows is the share-weighted sum of the ranks' means, the same
    as one process's on the whole batch. A last batch with fewer rows than processes is left out
    (every rank needs a row), which only happens with several processes.
    """
    end = len(dataset) if limit is None else min(limit, len(dataset))
    for start in range(0, end, batch_size):
        stop = min(start + batch_size, end)
        if stop - start < world_size:
            return
        rows = range(start + rank, stop, world_size)
        yield collate_fn([dataset[index] for index in rows]), len(rows) / (stop - start)


def world_size() -> int:
    """Processes in this run, from the launcher's environment (1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def backend() -> str:
    """The collective backend: NCCL where each process has a GPU, gloo on CPU."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def _state() -> PartialState:
    # cpu=True on CPU-only machines: without it accelerate sees no distributed setup (DistributedType.NO)
    # and the Trainer trains each process's copy apart, with no gradient all-reduce
    return PartialState(cpu=not torch.cuda.is_available(), backend=backend())


def start() -> None:
    """Join the process group now (before any stage), when launched with several processes."""
    if world_size() > 1:
        _state()


def is_main() -> bool:
    """True in the process that writes files and prints (the only one without a launcher)."""
    if world_size() == 1:
        return True
    _state()
    return dist.get_rank() == 0


def wait() -> None:
    """Every process waits here until all have arrived (nothing to wait for in a single process).

    A torch.distributed barrier: accelerate's ``wait_for_everyone`` does nothing for CPU processes that
    torchrun started (it sees no distributed type there), although their process group is up.
    """
    if world_size() > 1:
        _state()
        dist.barrier()


def finish() -> None:
    """Every process waits for the others, then the process group is closed.

    Leaving with a gloo group still open can abort a process at interpreter exit ("terminate called
    without an active exception"), which the launcher reports as a failed run.
    """
    if world_size() > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
