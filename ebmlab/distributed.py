"""Multi-process training under torchrun: the process group and the few collectives ebmlab uses.

ebmlab does not wrap its networks in DistributedDataParallel: DDP does not average gradients of
gradients (pytorch/pytorch#63929), which ICD's KL term takes through its last Langevin step.
Instead every process runs the whole method on its own shard of each batch, and `Method.update`
averages the gradients before clipping and the optimiser's step, so every process takes the
same step and the weights stay identical. What else a process holds stays its own: its replay
buffer, its RNG, its BatchNorm statistics.

Rank 0 alone reads and writes the run directory; `decided_on_main` hands its answers (or its
error) to the others. With a single process (no torchrun, or WORLD_SIZE=1) every function here
does nothing, or returns its input, and no process group exists.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from ebmlab.errors import EbmlabError

T = TypeVar("T")


def launched() -> bool:
    """Whether torchrun (or an equivalent launcher) started more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def _gpu_per_process() -> bool:
    # the same answer on every process of a node, so all of them pick the same backends
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return torch.cuda.is_available() and torch.cuda.device_count() >= local_processes


def init_from_env() -> None:
    """Join the process group that torchrun's variables describe (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT); once, and only when more than one process was launched.

    NCCL carries CUDA tensors and gloo CPU tensors, so the device a run trains on may be chosen
    later, from the config; small Python objects travel through gloo."""
    if not launched() or is_distributed():
        return
    if _gpu_per_process():
        torch.cuda.set_device(local_rank())
        dist.init_process_group("cpu:gloo,cuda:nccl")
    else:
        dist.init_process_group("gloo")


def shutdown() -> None:
    """Leave the process group. Every process waits for the others first: a gloo process whose
    peer has already torn the group down can abort on its way out ("terminate called without
    an active exception", seen in CI)."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """The device of this process: on GPUs, each process has its own, cuda:LOCAL_RANK."""
    if not is_distributed() or device.type != "cuda":
        return device
    if not _gpu_per_process():
        raise EbmlabError(
            f"{os.environ.get('LOCAL_WORLD_SIZE')} processes on this machine but "
            f"{torch.cuda.device_count()} GPU(s): start at most one process per GPU "
            "(--nproc_per_node), or train on --device cpu"
        )
    return torch.device("cuda", local_rank())


def decided_on_main(decide: Callable[[], T]) -> T:
    """`decide()` run by rank 0 alone, its result given to every process, or its EbmlabError
    raised on every process: for what reads or checks the run directory."""
    if not is_distributed():
        return decide()
    outcome: list[Any] = [None]
    if is_main():
        try:
            outcome = [(decide(), None)]
        except EbmlabError as err:
            outcome = [(None, str(err))]
    dist.broadcast_object_list(outcome, src=0)
    result, error = outcome[0]
    if error is not None:
        raise EbmlabError(error)
    return result


def main_says(flag: bool) -> bool:
    """Rank 0's `flag` on every process: for decisions taken by a clock (time budgets)."""
    if not is_distributed():
        return flag
    carrier = torch.tensor([flag], dtype=torch.uint8)
    dist.broadcast(carrier, src=0)
    return bool(carrier.item())


def any_process(flag: bool) -> bool:
    """Whether `flag` is True on any process: for events one process sees (a signal)."""
    if not is_distributed():
        return flag
    carrier = torch.tensor([flag], dtype=torch.uint8)  # on the host: gloo, no GPU sync
    dist.all_reduce(carrier, op=dist.ReduceOp.MAX)
    return bool(carrier.item())


def gather_on_main(obj: T) -> list[T] | None:
    """Every process's `obj` (CPU tensors only: a CUDA tensor would unpickle onto the sender's
    GPU) as a list by rank on rank 0; None on the others."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] | None = [None] * world_size() if is_main() else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def concatenated(tensor: Tensor) -> Tensor:
    """Every process's `tensor` (one shape on all), concatenated along dim 0 in rank order."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def all_true(flag: Tensor) -> Tensor:
    """A boolean tensor that is True when `flag` is True on every process."""
    if not is_distributed():
        return flag
    flag = flag.to(torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return flag.bool()


def average(tensors: list[Tensor]) -> list[Tensor]:
    """The mean over processes of each tensor, in one collective (tensors on one device)."""
    if not is_distributed() or not tensors:
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= world_size()
    pieces = flat.split([t.numel() for t in tensors])
    return [p.view_as(t).to(t.dtype) for p, t in zip(pieces, tensors, strict=True)]


def average_gradients(params: list[Tensor]) -> None:
    """Replace each `.grad` by its mean over processes.

    A process where a parameter took no part in the loss counts zero for it; a parameter
    without a gradient on every process keeps `.grad = None`, so optimisers skip it as they do
    in a single process."""
    if not is_distributed() or not params:
        return
    # which gradients exist is known on the host: a CPU tensor (gloo) counts them without
    # waiting for the GPU
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.int32)
    dist.all_reduce(has_grad)
    grads = average([torch.zeros_like(p) if p.grad is None else p.grad for p in params])
    for param, grad, count in zip(params, grads, has_grad.tolist(), strict=True):
        param.grad = grad if count else None
