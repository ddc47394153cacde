"""Resuming a run: what a checkpoint holds, and putting it back on every process.

`fit` (`helpers.train`) keeps its changing state in a `State` and what its phases share in a `Job`; this module
turns them into a checkpoint's payload (`checkpoint_payload`) and back (`restore_state`), with every rank's random
streams (`process_rng_state`, `restore_process_rng_state`), says when a run is over (`stop_reason`), and checks
the run folder before a run starts or goes on (`prepare_folder`, `same_run_on_every_rank`). A run resumed with
another number of processes goes on with the stored weights and optimizer and fresh random streams
(`fresh_streams`). Rank 0 alone reads and writes the folder and hands what it read to the other ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from helpers.checkpoint import data_record, restore_rng_state, rng_state
from helpers.data import SequenceData, Split
from helpers.distributed import SharedEvaluator, World, rank_generator, rank_torch_seed
from helpers.errors import CheckpointError, ConfigError
from helpers.model import SSEPT, load_model_state
from helpers.runs import RunFolder, differences, flatten
from helpers.sampler import TrainSampler
from helpers.settings import TrainConfig
from helpers.utils import DROPOUT_STREAM, RANK_DRAWS_STREAM, RANK_TORCH_STREAM, relative

#: The validation metric that picks the best epoch and drives early stopping.
SELECTION_METRIC = "valid_ndcg@10"


@dataclass
class State:
    """What changes while `fit` runs (and what a checkpoint restores)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] | None = None
    epoch: int = 0


def evaluations_since_best(history: list[dict[str, Any]], best: dict[str, Any]) -> int:
    """How many evaluations came after the best one (what patience counts)."""
    if not best:
        return 0
    return sum(1 for row in history if row["epoch"] > best["epoch"] and SELECTION_METRIC in row
               and not _missing(row[SELECTION_METRIC]))


def _missing(value: Any) -> bool:
    """A metric cell with no value: absent from a history row, or NaN where the row was read from history.csv."""
    return value is None or (isinstance(value, float) and value != value)


def stop_reason(config: TrainConfig, history: list[dict[str, Any]], best: dict[str, Any], epoch: int) -> str | None:
    """Why a run is over after `epoch` (its `history` and `best` epoch): "patience" once `config.patience`
    evaluations in a row bring no new best, "cap" (with patience) or "epochs" once it has trained `config.epochs`;
    None while it goes on. `fit` stops by it; a notebook reads it from a run's history.csv to say what will train."""
    if config.patience and evaluations_since_best(history, best) >= config.patience:
        return "patience"
    if epoch >= config.epochs:
        return "cap" if config.patience else "epochs"
    return None


@dataclass
class Job:
    """What the phases of `fit` share: the model and how it trains, is evaluated and is saved."""

    split: Split
    config: TrainConfig
    model: SSEPT
    trainee: nn.Module  # what the training steps run: the model, or with several processes its DDP wrapper
    optimizer: torch.optim.Optimizer
    sampler: TrainSampler
    evaluators: dict[str, SharedEvaluator]
    device: torch.device
    folder: RunFolder | None
    world: World


def rank_streams(model: SSEPT, seed: int, rank: int, *more: int) -> np.random.Generator:
    """One rank's own streams from (seed, stream, rank, *more): seeds the model's dropout and torch's
    generators (dropout off the CPU), and returns the generator of the rank's draws."""
    model.dropout_rng.bit_generator.state = rank_generator(seed, DROPOUT_STREAM, rank, *more).bit_generator.state
    torch.manual_seed(rank_torch_seed(seed, RANK_TORCH_STREAM, rank, *more))
    return rank_generator(seed, RANK_DRAWS_STREAM, rank, *more)


def process_rng_state(model: SSEPT, sampler: TrainSampler) -> dict[str, Any]:
    """This process's random state: the sampler's draws (and its order, when kept apart), dropout, torch."""
    apart = sampler.order_rng if sampler.order_rng is not sampler.draw_rng else None
    return rng_state(sampler.draw_rng, model.dropout_rng, apart)


def restore_process_rng_state(model: SSEPT, sampler: TrainSampler, ckpt: dict[str, Any], world: World,
                              path: Path, new_count: bool = False) -> None:
    """Put back this rank's random state from a checkpoint written by as many processes (with `new_count`,
    by any number of them: see `fresh_streams`)."""
    stored = ckpt.get("world_size", 1)
    if stored != world.size:
        if not new_count:
            raise CheckpointError(f"{path} holds the random states of {stored} process(es) and this launch has "
                                  f"{world.size}; relaunch with torchrun --nproc_per_node {stored}, or pass "
                                  "--new-process-count")
        fresh_streams(model, sampler, ckpt, world)
        return
    state = ckpt["rng"][world.rank] if world.size > 1 else ckpt["rng"]
    apart = sampler.order_rng if sampler.order_rng is not sampler.draw_rng else None
    restore_rng_state(sampler.draw_rng, model.dropout_rng, state, apart)


def fresh_streams(model: SSEPT, sampler: TrainSampler, ckpt: dict[str, Any], world: World) -> None:
    """The random state of a run resumed with another number of processes.

    The order of users goes on from the stored one (every rank's is the same; one process drew it from
    its only generator), so all ranks still agree on it. Each rank's draws (windows, negatives, SSE),
    dropout and torch generator start afresh from (seed, stream, rank, epoch, processes): the old
    ranks' streams cannot be dealt out to a new count. The run stays repeatable from here on.
    """
    states = ckpt["rng"] if isinstance(ckpt["rng"], list) else [ckpt["rng"]]
    order = states[0].get("order", states[0]["numpy"])
    seed, more = int(ckpt["train"]["seed"]), (int(ckpt["epoch"]), world.size)
    draws = rank_streams(model, seed, world.rank, *more)
    sampler.order_rng.bit_generator.state = order  # one process: also its draws' generator
    if sampler.draw_rng is not sampler.order_rng:
        sampler.draw_rng.bit_generator.state = draws.bit_generator.state


def prepare_folder(folder: RunFolder, description: dict[str, Any], resume: bool, overwrite: bool, world: World,
                   new_count: bool = False) -> None:
    """Rank 0 checks the folder and writes run.json; every rank then refuses alike, or goes on.

    Only rank 0 touches the folder, so the machines of a multi-node run need no shared storage for it.
    """
    refusal = None
    if world.main:
        try:
            folder.prepare(description, resume, overwrite, new_count)
        except ConfigError as err:
            refusal = str(err)
    refusal = world.broadcast(refusal)
    if refusal is not None:
        raise ConfigError(refusal)


def same_run_on_every_rank(description: dict[str, Any], data: SequenceData, world: World) -> None:
    """Refuse, on every rank alike, when a rank's settings or data differ from rank 0's: machines that
    read different files or flags would otherwise train a mixture of runs without a word."""
    everyone = world.all_gather(flatten(description) | {"data.digest": data.digest()})
    for rank, theirs in enumerate(everyone[1:], start=1):
        # The file's path may differ between machines; its content is compared (init_from_sha256).
        differs = differences(everyone[0], theirs, ignore=("init_from",))
        if differs:
            raise ConfigError(
                f"rank {rank} does not run rank 0's training (rank 0 -> rank {rank}: {', '.join(differs)}); "
                "every machine needs the same dataset file, --init-from file and flags"
            )


def restore_state(folder: RunFolder, model: SSEPT, optimizer: torch.optim.Optimizer, sampler: TrainSampler,
                  world: World, log: Callable[[str], None], new_count: bool = False,
                  config: TrainConfig | None = None) -> State:
    """The state of the folder's newest readable checkpoint (a fresh state if there is none): rank 0 reads
    it, settles the best epoch's weights (`best_weights`) and hands both to every rank, and each takes its own
    random state from it. A checkpoint whose best weights are gone is refused on every rank alike. `config`, the
    run's settings, only words the log line: a run that its stop rule (`stop_reason`) has ended is reloaded, not
    resumed."""
    refusal = latest = best_state = None
    if world.main:
        try:
            latest, best_state = read_latest(folder, log)
        except CheckpointError as err:
            refusal = str(err)
    latest, best_state, refusal = world.broadcast((latest, best_state, refusal))
    if refusal is not None:
        raise CheckpointError(refusal)
    if latest is None:
        log(f"no checkpoint in {relative(folder.path)} yet: starting from epoch 0")
        return State()
    load_model_state(model, latest["model"], str(folder.last))
    optimizer.load_state_dict(latest["optimizer"])
    restore_process_rng_state(model, sampler, latest, world, folder.last, new_count)
    stored = latest.get("world_size", 1)
    changed = (f" with {world.size} process(es) instead of {stored}: the weights and the optimizer go on, the "
               "random streams start afresh" if stored != world.size else "")
    state = State(list(latest["history"]), dict(latest["best"]), best_state, int(latest["epoch"]))
    reason = stop_reason(config, state.history, state.best, state.epoch) if config is not None else None
    if reason is not None:
        done = (f"was stopped by patience after {state.epoch} epochs" if reason == "patience"
                else f"has trained all {state.epoch} epochs")
        log(f"{relative(folder.path)} {done}: reloading it (best epoch {state.best.get('epoch', 'none')})")
    else:
        log(f"resuming {relative(folder.path)} from epoch {state.epoch}{changed}")
    return state


def read_latest(folder: RunFolder, log: Callable[[str], None]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The folder's newest readable checkpoint and, if there is one, the weights of the best epoch it records
    (`best_weights`, which puts best.pt right where it disagrees)."""
    latest = folder.load_latest(log)
    if latest is None:
        return None, None
    return latest, best_weights(folder, latest, log)


def best_epoch_of(ckpt: dict[str, Any]) -> int:
    """The epoch whose weights a best.pt holds (its record's; the checkpoint's own epoch for a bare one)."""
    return int((ckpt.get("best") or {}).get("epoch", ckpt["epoch"]))


def best_weights(folder: RunFolder, latest: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any] | None:
    """The weights of the best epoch that `latest` (the checkpoint a run resumes from) records, with best.pt made
    to agree with that record: a best.pt of another epoch (written just before a kill, or newer than a prev.pt
    the run falls back to) or a missing one is written again from these weights, and a best.pt of an epoch
    after the record's first evaluation is removed. Weights that cannot be found are refused, never replaced
    by others.

    A resumable checkpoint carries its best epoch's weights (`best_model`, None when they are its own); one
    written before it carried them is settled by best.pt, when best.pt holds the recorded epoch.
    """
    record = latest.get("best") or {}
    found = folder.load_best(log)
    if not record:
        if found is not None:
            log(f"note: {relative(folder.best)} is of epoch {best_epoch_of(found)}, after the checkpoint resumed "
                f"from (epoch {latest['epoch']}, no evaluation yet): removed")
            folder.best.unlink()
        return None
    epoch = int(record["epoch"])
    if latest.get("best_model") is not None:
        weights = latest["best_model"]
    elif "best_model" in latest or epoch == int(latest["epoch"]):
        weights = latest["model"]
    elif found is not None and best_epoch_of(found) == epoch:
        weights = found["model"]
    else:
        held = f"holds epoch {best_epoch_of(found)}" if found is not None else "is missing"
        raise CheckpointError(
            f"{relative(folder.best)} {held}, but the checkpoint resumed from (epoch {latest['epoch']}) records its "
            f"best at epoch {epoch}, whose weights are nowhere else (a checkpoint written before they were kept "
            "in it); resume is refused rather than returning other weights as the best: start over with overwrite "
            "(--overwrite)"
        )
    if found is None or best_epoch_of(found) != epoch:
        held = f"held epoch {best_epoch_of(found)}" if found is not None else "was missing"
        log(f"note: {relative(folder.best)} {held}; written again with epoch {epoch}'s weights, the best the "
            f"checkpoint resumed from (epoch {latest['epoch']}) records")
        folder.save_best(best_payload(latest, weights))
    return weights


def best_payload(latest: dict[str, Any], weights: dict[str, Any]) -> dict[str, Any]:
    """best.pt for the best epoch `latest` records, with `weights`: what `checkpoint_payload` wrote at that epoch."""
    epoch = int(latest["best"]["epoch"])
    keep = ("config", "train", "data", "world_size")
    return {**{k: latest[k] for k in keep if k in latest}, "model": weights, "optimizer": None, "epoch": epoch,
            "history": [row for row in latest["history"] if row["epoch"] <= epoch], "best": latest["best"],
            "rng": None}


def checkpoint_payload(job: Job, state: State,
                       rng: dict[str, Any] | list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A checkpoint of the current weights; with `rng` (every rank's random state), a resumable one."""
    data = job.split.data
    return {
        "config": asdict(job.model.config), "train": asdict(job.config),
        "data": data_record(data),
        "model": {k: v.detach().cpu() for k, v in job.model.state_dict().items()},
        "optimizer": job.optimizer.state_dict() if rng is not None else None,
        "epoch": state.epoch, "history": state.history, "best": state.best,
        "rng": rng, "world_size": job.world.size,
    } | ({"best_model": _best_model(state)} if rng is not None else {})


def _best_model(state: State) -> dict[str, torch.Tensor] | None:
    """The best epoch's weights for a resumable checkpoint: None when they are its own (the best epoch is this
    one, or there is none yet), so a checkpoint written at an improvement holds them once."""
    if not state.best or int(state.best["epoch"]) == state.epoch:
        return None
    return state.best_state
