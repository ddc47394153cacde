"""Several processes training one model (torchrun): the process group, who writes, what is gathered.

`torchrun --standalone --nproc_per_node N -m helpers.train ...` starts N processes (ranks) and sets
RANK, LOCAL_RANK and WORLD_SIZE; `process_group` then joins them (gloo on a CPU, NCCL on CUDA) and
yields their `World`. Without those variables nothing is started and `World()` is a single process,
for which every method here does nothing (no collective, no copy), so a plain run is unchanged.

- Rank 0 alone reads and writes the run folder and prints (`World.log`); it hands what it read to the
  others (`broadcast`), so the machines of a multi-node run need no shared storage for it.
- `wrap` puts the model in DistributedDataParallel (gradients averaged over the ranks at each step).
- `SharedEvaluator` splits an evaluation over the ranks and gathers it: one process's metrics, exactly.
- The collectives (`all_gather`, `all_sum`, `broadcast`) are reached by every rank at the same point, or they hang
  until the group's timeout (`TIMEOUT_S`): decisions that lead to one are taken from values that
  are the same on every rank.
- Each rank draws from its own generators, `rank_generator(seed, stream, rank)`, with the stream
  ids of `helpers.utils`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from helpers.data import Split
from helpers.errors import ConfigError, NonFiniteError, SSEPTError
from helpers.evaluate import Evaluator, Scorer, batch_size_for
from helpers.metrics import summarize

T = TypeVar("T")
#: What `--backend` accepts: auto is NCCL on CUDA, gloo otherwise.
BACKENDS = ("auto", "gloo", "nccl")
#: The environment variables torchrun sets for each process; all of them, or no process group.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
#: Seconds a collective waits for the other ranks before it fails (instead of hanging forever). The
#: longest legitimate wait is rank 0 writing a checkpoint while the others wait at the next step.
TIMEOUT_S = 600.0
#: Seconds a rank other than 0 waits before reporting a project error: rank 0 meets the same error
#: (same settings, same files) and reports it, and torchrun stops the others once it has exited, well
#: within this wait (docs/model.md, "Several processes"), so the message shows once. Only an error that
#: rank 0 does not meet waits this long.
REPORT_GRACE_S = 10.0


@dataclass(frozen=True)
class World:
    """This process's place among the processes training one model (one process by default)."""

    rank: int = 0  # 0 .. size - 1; rank 0 writes the files and prints
    size: int = 1  # number of processes (WORLD_SIZE)
    local_rank: int = 0  # index on this machine: which GPU this process uses

    @property
    def main(self) -> bool:
        """Is this the process that writes and prints (rank 0)."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: its own GPU (cuda:LOCAL_RANK) when training on CUDA with several processes."""
        if device.type == "cuda" and self.size > 1:
            return torch.device("cuda", self.local_rank)
        return device

    def log(self, log: Callable[[str], None]) -> Callable[[str], None]:
        """`log` on rank 0, a no-op elsewhere (one line per message, not one per rank)."""
        return log if self.main else _silent

    def barrier(self) -> None:
        """Wait until every rank is here (e.g. until rank 0 has written the run folder)."""
        if self.size > 1:
            dist.barrier()

    def all_gather(self, obj: T) -> list[T]:
        """Every rank's `obj` (picklable), indexed by rank, on every rank."""
        if self.size == 1:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: T) -> T:
        """Rank 0's `obj` (picklable) on every rank; what the others pass is ignored."""
        if self.size == 1:
            return obj
        box: list[Any] = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of `tensor` over the ranks (in place), on every rank."""
        if self.size > 1:
            dist.all_reduce(tensor)
        return tensor


#: One process: no process group, every method a no-op.
SINGLE_PROCESS = World()


def _silent(message: str) -> None:
    """What a rank other than 0 does with a log line."""


def world_from_env(env: Mapping[str, str] | None = None) -> World | None:
    """The `World` torchrun describes in the environment, or None when not launched by torchrun."""
    env = os.environ if env is None else env
    found = [name for name in TORCHRUN_ENV if name in env]
    if not found:
        return None
    if len(found) < len(TORCHRUN_ENV):
        missing = ", ".join(n for n in TORCHRUN_ENV if n not in env)
        raise ConfigError(f"{', '.join(found)} set but not {missing}; launch with torchrun, or unset them")
    return World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"]))


def resolve_backend(choice: str, device: torch.device) -> str:
    """The process-group backend for `choice` (auto: NCCL on CUDA, gloo otherwise); NCCL needs CUDA."""
    if choice not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {choice!r}")
    if choice == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if choice == "nccl" and (device.type != "cuda" or not torch.cuda.is_available()):
        raise ConfigError(f"backend nccl needs CUDA, and this run is on {device.type}; "
                          "use --backend gloo (or auto), or train on a GPU")
    return choice


@contextlib.contextmanager
def process_group(backend: str = "auto", device: torch.device | None = None, world: World | None = None,
                  init_method: str = "env://", timeout_s: float = TIMEOUT_S) -> Iterator[World]:
    """Join the process group of `world` (default: torchrun's, from the environment) for the block.

    Yields `World()` and starts nothing when there is no such world. The group is destroyed at the
    end, also on an error. A project error on a rank other than 0 is reported after a short wait
    (`REPORT_GRACE_S`), so each error shows once: rank 0 meets it too and prints it first.
    """
    world = world if world is not None else world_from_env()
    device = device if device is not None else torch.device("cpu")
    if world is None:
        resolve_backend(backend, device)  # the same choice is refused with one process as with several
        yield SINGLE_PROCESS
        return
    try:
        name = resolve_backend(backend, device)
        if name == "nccl":
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group(name, init_method=init_method, rank=world.rank, world_size=world.size,
                                timeout=timedelta(seconds=timeout_s))
        try:
            yield world
        finally:
            dist.destroy_process_group()
    except SSEPTError:
        if not world.main:
            time.sleep(REPORT_GRACE_S)
        raise


class ParallelModel(DistributedDataParallel):
    """DistributedDataParallel that hands what it lacks (`score_items`, `item_emb`, ...) to the model,
    so the loss code calls it as it calls the model; its forward is the model's, with gradients
    averaged over the ranks in the backward pass."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":  # not set yet (inside DistributedDataParallel's own __init__)
                raise
            return getattr(self.module, name)


def wrap(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """`model` itself for one process; for several, a `ParallelModel` of it (parameters from rank 0)."""
    if world.size == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return ParallelModel(model, device_ids=ids)


def sync_gradients(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager[Any]:
    """The context of a forward and backward pass: averaging gradients over the ranks only with `sync`
    (the last piece of a batch), so a batch computed in pieces costs one exchange, not one per piece."""
    if sync or not isinstance(model, DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


def rank_generator(seed: int, stream: int, rank: int, *more: int) -> np.random.Generator:
    """The generator of `stream` (an id from `helpers.utils`) for one rank of a multi-process run (`more`:
    further numbers, e.g. the epoch and process count of a run resumed with another count)."""
    return np.random.default_rng([seed, stream, rank, *more])


def rank_torch_seed(seed: int, stream: int, rank: int, *more: int) -> int:
    """A seed for torch's generators on one rank (CUDA dropout draws from them), from (seed, stream, rank, *more)."""
    return int(np.random.SeedSequence([seed, stream, rank, *more]).generate_state(1, np.uint64)[0] >> 1)


class SharedEvaluator:
    """An `Evaluator` whose users are split over the ranks by whole batches, gathered on every rank.

    One process ranks its users in batches, shortest histories first; here rank r ranks every
    `size`-th of those batches, so each user is scored in the very batch one process would score
    it in, and the gathered ranks, put back in one process's order, give exactly its metrics. Every
    rank gets them, so every rank takes the same decisions (best epoch, early stopping).
    """

    def __init__(self, split: Split, which: str, protocol: str, seed: int, n_negatives: int, world: World,
                 device: torch.device) -> None:
        self.world = world
        if world.size == 1:  # exactly the plain evaluation
            self.whole = Evaluator(split, which, protocol, seed, n_negatives)
            return
        size = batch_size_for(device)
        self.whole = Evaluator(split, which, protocol, seed, n_negatives, batch_size=size)
        self.owner = np.arange(self.whole.users.size) // size % world.size  # rank of each user's batch
        mine = self.whole.users[self.owner == world.rank]
        self.mine = self.whole.restricted(mine) if mine.size else None  # against the whole's negatives

    def __call__(self, model: Scorer, device: torch.device | str | None = None) -> dict[str, Any]:
        """`Evaluator.__call__`'s metrics over every evaluated user, the same on every rank."""
        if self.world.size == 1:
            return self.whole(model, device)
        try:
            local: np.ndarray | str = self.mine.ranks(model, device) if self.mine else np.zeros(0, np.int64)
        except NonFiniteError as err:  # raised on every rank below, not only here: the others would wait
            local = str(err)
        parts = self.world.all_gather(local)
        failed = [part for part in parts if isinstance(part, str)]
        if failed:
            raise NonFiniteError(failed[0])
        ranks = np.zeros(self.whole.users.size, dtype=np.int64)
        for rank, part in enumerate(parts):
            ranks[self.owner == rank] = part
        return {**summarize(ranks), "users": int(self.whole.users.size), "skipped_users": self.whole.n_skipped}
