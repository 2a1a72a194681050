"""Running under ``torchrun``: process-group set-up, image sharding and the collectives the library uses.

Nothing here wraps a model (nothing is optimised, so no DDP): each rank computes on its shard of the
images and the results are combined with plain collectives - gradient sums for scoring
(``all_reduce_sum``), features for kNN (``all_gather_rows``, dropping the padding of uneven shards),
fitness values for the search (``all_gather_floats``). Without an initialised process group (or with one
process) every helper is the identity, so the single-process path costs nothing.

Failures: a step only one rank runs into (a damaged image in its shard) must not leave the other ranks
waiting at the next collective until gloo/nccl reports "connection closed by peer". Rank-local steps
run inside :func:`shared_failures`: on leaving it the ranks agree (one all-reduce) whether any of them
failed, and then every rank raises the same one-line error.

Backend: ``nccl`` when the process owns a CUDA device, ``gloo`` otherwise (CPU tests run 2 gloo processes).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist

from snapvit_core.errors import SnapViTError

log = logging.getLogger(__name__)


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on the process that writes files and prints (rank 0, or the only process)."""
    return rank() == 0


def init_from_env(device: str | torch.device | None = None) -> bool:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1).

    Returns True when a process group of more than one process is active afterwards. On CUDA each rank
    takes the device ``LOCAL_RANK``.
    """
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    wants_cuda = device is None or str(device) == "auto" or torch.device(device).type == "cuda"
    cuda = torch.cuda.is_available() and wants_cuda
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    log.info("process group: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), dist.get_backend())
    return True


def shard_range(count: int) -> range:
    """This rank's contiguous share of ``count`` items (ranks 0..W-1 in order cover 0..count-1).

    Contiguous (not strided) so that gathering the shards in rank order restores the original order.
    """
    per_rank = -(-count // world_size())  # ceil
    start = min(count, rank() * per_rank)
    return range(start, min(count, start + per_rank))


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (identity in one process). Returns ``tensor``."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_rows(local: torch.Tensor, total: int) -> torch.Tensor:
    """Concatenate every rank's (n_r, ...) rows in rank order, then keep the first ``total`` rows.

    Shards from :func:`shard_range` differ in length by at most their padding; each rank pads to the
    largest shard so the collective has equal sizes, and the padding is dropped here.
    """
    if not is_distributed():
        return local[:total]
    per_rank = -(-total // world_size())
    padded = local.new_zeros((per_rank, *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world_size())]
    dist.all_gather(parts, padded)
    sizes = [len(range(min(total, r * per_rank), min(total, (r + 1) * per_rank))) for r in range(world_size())]
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def all_gather_floats(values: list[float], total: int) -> list[float]:
    """Gather per-rank float lists (shards of ``total`` values from :func:`shard_range`) in order."""
    if not is_distributed():
        return list(values)
    local = torch.tensor(values, dtype=torch.float64).reshape(-1, 1)
    return all_gather_rows(local.to(_collective_device()), total)[:, 0].cpu().tolist()


MAX_MESSAGE_BYTES = 2048  # of the error shared with the other ranks


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


@contextlib.contextmanager
def shared_failures() -> Iterator[None]:
    """Run a rank-local step (decoding this rank's images, its share of a computation) so that a failure
    on any rank becomes the same error on every rank, before anyone reaches the next collective.

    Every rank must enter and leave the block at the same point of the program, and the block must not
    contain collectives itself. On leaving, one all-reduce finds the lowest failing rank; that rank
    raises its own exception, every other rank a ``SnapViTError`` with the same text (for a
    ``SnapViTError``) or naming the failed process (for anything else). Identity without a process group.
    """
    if not is_distributed():
        yield
        return
    error: Exception | None = None
    try:
        yield
    except Exception as caught:  # noqa: BLE001 - shared with the other ranks, then raised again below
        error = caught
    device = _collective_device()
    failed = torch.tensor([rank() if error is not None else world_size()], device=device)
    dist.all_reduce(failed, op=dist.ReduceOp.MIN)
    source = int(failed.item())
    if source == world_size():
        return
    message = torch.zeros(MAX_MESSAGE_BYTES + 1, dtype=torch.uint8, device=device)  # [kind, utf-8 bytes ...]
    if source == rank() and error is not None:
        kind, text = (1, str(error)) if isinstance(error, SnapViTError) else (2, f"{type(error).__name__}: {error}")
        data = text.encode("utf-8", "replace")[:MAX_MESSAGE_BYTES]
        message[0] = kind
        message[1 : 1 + len(data)] = torch.tensor(list(data), dtype=torch.uint8, device=device)
    dist.broadcast(message, src=source)
    if source == rank() and error is not None:
        raise error
    kind = int(message[0].item())
    text = bytes(message[1:].cpu().tolist()).rstrip(b"\0").decode("utf-8", "replace")
    if kind == 1:
        raise SnapViTError(text)
    raise SnapViTError(
        f"Process {source} of {world_size()} failed: unexpected {' '.join(text[:300].split())[:200]}.",
        "See that process's error line (and its log file).",
    )


def broadcast_module(module: torch.nn.Module) -> torch.nn.Module:
    """Give every rank rank 0's parameters and buffers (e.g. an unseeded random-init backbone)."""
    if is_distributed():
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)
    return module


def shutdown() -> None:
    """Leave the process group (end of a torchrun command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()
