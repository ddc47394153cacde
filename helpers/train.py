"""Training: `fit(...)` and `python -m helpers.train`.

- Adam (betas 0.9, 0.98) on one of the losses in `helpers.losses`.
- The training step never waits for the device (the loss is summed on the device and
  read once per epoch), so `compile` (torch.compile, optionally with CUDA graphs) can
  capture it whole on a GPU.
- Validation every `eval_every` epochs; the best epoch by validation NDCG@10 is kept
  (`best.pt`) and its test metrics are the ones reported. With `patience` > 0 the run
  stops once that many evaluations in a row have not improved (`epochs` is then a cap).
- A NaN or infinite loss or score stops the run with `NonFiniteError`; the last good
  checkpoint is left as it was.
- Checkpoints every `checkpoint_every` epochs and at each improvement, in a run folder
  (`helpers.runs`): a run killed at any moment resumes (`resume=True`, `helpers.resume`) to
  exactly the weights and metrics of an uninterrupted run on the CPU.
- `init_from=CKPT` copies the encoder (blocks, position embeddings, final layer norm)
  and, when the dataset is the same, the user and item tables too.
- Several processes (`torchrun --nproc_per_node N -m helpers.train ...`, `helpers.distributed`):
  `batch_size` stays the global batch, each rank trains its share of it and DistributedDataParallel
  averages the gradients, so each step is the global batch's; evaluation is split over the ranks
  and gathered; rank 0 alone writes the run folder, which records every rank's random state.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from helpers import settings
from helpers.checkpoint import read_checkpoint, same_data_as
from helpers.data import SequenceData, Split, leave_one_out, load
from helpers.distributed import BACKENDS, SINGLE_PROCESS, SharedEvaluator, World, process_group, sync_gradients, wrap
from helpers.errors import CheckpointError, ConfigError, NonFiniteError
from helpers.fetch import sha256_of
from helpers.losses import compute_loss, make_loss_fn
from helpers.model import SSEPT, transfer_encoder
from helpers.resume import (
    SELECTION_METRIC,
    Job,
    State,
    checkpoint_payload,
    prepare_folder,
    process_rng_state,
    rank_streams,
    restore_state,
    same_run_on_every_rank,
    stop_reason,
)
from helpers.runs import RunFolder
from helpers.sampler import TrainSampler, prefetch
from helpers.settings import SSEPTConfig, TrainConfig
from helpers.tensorboard_log import TensorBoardLog, require_tensorboard
from helpers.utils import FRACTION_STREAM, device_description, get_device, relative, run_cli, seed_everything


@dataclass
class FitResult:
    """What `fit` returns: the best model, its history and where files went."""

    model: SSEPT
    history: pd.DataFrame
    best: dict[str, Any]
    out_dir: Path | None
    device: str
    stop_reason: str = "epochs"  # "epochs" (all run, no patience), "patience", or "cap" (patience never ran out)


# --------------------------------------------------------------------------- pieces

#: Pieces per batch when `chunks` is 0 (auto), by device type (docs/speed.md).
AUTO_CHUNKS = {"cpu": 4}
AUTO_CHUNKS_ELSEWHERE = 1


def pieces_per_batch(config: TrainConfig, device: torch.device) -> int:
    """`config.chunks`, or for 0 (auto) the faster choice on each device (`AUTO_CHUNKS`).

    On a CPU the work grows with the padded cells, so 4 pieces of similar length win; on a GPU
    each piece is launch-bound, so one whole batch wins (the timings: docs/speed.md, "On the CPU"
    and "On a GPU"). The gradient is the same.
    """
    if config.chunks:
        return config.chunks
    return AUTO_CHUNKS.get(device.type, AUTO_CHUNKS_ELSEWHERE)


def train_epoch(
    model: SSEPT | nn.Module, sampler: TrainSampler, optimizer: torch.optim.Optimizer, config: TrainConfig,
    device: torch.device, progress: bool = False, desc: str = "epoch", world: World = SINGLE_PROCESS,
) -> float:
    """One pass over the training users; returns the mean loss per real position.

    Each batch is one optimizer step. With more than one piece (`pieces_per_batch`) its rows
    are computed in pieces of similar length (`Batch.split`) whose gradients add up to the
    batch's. The next batch is sampled in a background thread meanwhile (`prefetch`): the
    same batches as without it.

    With several processes, `model` is `distributed.wrap`'s and each rank computes its share of each
    global batch (`TrainSampler.shares`), its loss divided by the global batch's positions over the
    number of ranks: the wrapper averages the ranks' gradients, so the step is the global batch's
    mean, as one process takes it (up to the order of float sums).
    """
    model.train()
    use_amp = config.amp and device.type == "cuda"
    parts = pieces_per_batch(config, device)
    loss_fn = make_loss_fn(config.compile)
    acc_dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
    total = torch.zeros((), dtype=acc_dtype, device=device)
    count = 0
    for batch, positions in tqdm(prefetch(sampler.shares()), total=len(sampler), desc=desc, leave=False,
                                 disable=not progress):
        share = max(positions, 1) / world.size  # one process: the batch's own count
        optimizer.zero_grad(set_to_none=True)
        pieces = batch.split(parts)
        for i, piece in enumerate(pieces):
            with sync_gradients(model, sync=i == len(pieces) - 1):  # one exchange per batch, not per piece
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    loss = compute_loss(model, piece, device, config, positions=share, penalty=i == 0,
                                        loss_fn=loss_fn)
                loss.backward()
            total += loss.detach().to(total.dtype) * share
        optimizer.step()
        count += positions
    return world.all_sum(total).item() / max(count, 1)  # the only wait for the device in an epoch


def make_optimizer(model: SSEPT, config: TrainConfig) -> torch.optim.Adam:
    """Adam over the tables, the encoder (frozen or with its own learning rate) and the copy bonus (its own
    learning rate: it has a few parameters that start at zero and must move within the few epochs a run on
    little data lasts)."""
    encoder = {id(p) for p in model.encoder_parameters()}
    copy = [model.copy_bonus] if model.copy_bonus is not None else []
    tables = [p for p in model.parameters() if id(p) not in encoder and all(p is not c for c in copy)]
    groups: list[dict[str, Any]] = [{"params": tables, "lr": config.lr}]
    if copy:
        groups.append({"params": copy, "lr": config.lr * config.copy_lr_scale})
    if config.freeze_encoder:
        for p in model.encoder_parameters():
            p.requires_grad_(False)
    else:
        groups.append({"params": model.encoder_parameters(), "lr": config.lr * config.encoder_lr_scale})
    fused = next(model.parameters()).is_cuda  # one kernel per step instead of one per tensor and op
    return torch.optim.Adam(groups, lr=config.lr, betas=(config.beta1, config.beta2), fused=fused or None)


def training_users(split: Split, fraction: float, seed: int) -> np.ndarray | None:
    """A nested random subset of the training users (None means all of them)."""
    if fraction >= 1.0:
        return None
    users = np.flatnonzero(split.train_len >= 2)
    order = np.random.default_rng([seed, FRACTION_STREAM]).permutation(users)
    return np.sort(order[: max(1, math.ceil(fraction * users.size))])


# --------------------------------------------------------------------------- fit


def _description(split: Split, model_config: SSEPTConfig, config: TrainConfig,
                 init_from: str | Path | None, world: World) -> dict[str, Any]:
    """Every setting that shapes the run, as stored in run.json (the data and the pretrained file by content hash
    too, and the number of processes: each draws its own share, so another count is another run)."""
    return {"model": asdict(model_config), "train": asdict(config), "dataset": split.data.name,
            "data_digest": split.data.digest(),
            "init_from": str(init_from) if init_from else None,
            "init_from_sha256": sha256_of(Path(init_from)) if init_from else None, "world_size": world.size}


def same_data(ckpt: dict[str, Any], data: SequenceData, source: str, log: Callable[[str], None]) -> bool:
    """Was `ckpt` trained on `data` (so that its item and user tables fit it): by the recorded digest; for a
    checkpoint written before the digest was recorded, by dataset name and sizes, and one `log` line says so when
    that match is what copies its tables."""
    same = same_data_as(ckpt, data)
    if same is not None:
        return same
    stored = ckpt.get("data") or {}
    same = (stored.get("name"), stored.get("n_users"), stored.get("n_items")) == (data.name, data.n_users,
                                                                                   data.n_items)
    if same:
        log(f"note: {relative(source)} records no data digest (written before it was recorded): its item and user "
            f"tables are copied because its dataset name and sizes are {data.name!r}'s")
    return same


def training_setup(split: Split, model_config: SSEPTConfig, config: TrainConfig, dev: torch.device,
                   init_from: str | Path | None = None, world: World = SINGLE_PROCESS,
                   log: Callable[[str], None] = tqdm.write,
                   ) -> tuple[SSEPT, torch.optim.Adam, TrainSampler, np.random.Generator]:
    """The seeded model (with a transferred encoder if asked) on `dev`, its optimiser, the sampler and
    its generator: `fit`'s setup, shared with the benchmark (`helpers.studies.bench`). The item and user
    tables are transferred too when `init_from` was trained on the same data (`same_data`).

    With several processes every rank builds the same model and the same order of users, and draws
    its share (windows, negatives, SSE, dropout) from streams of (seed, rank); one process draws
    from the seed's own streams (`helpers.utils`).
    """
    data = split.data
    if (model_config.n_users, model_config.n_items) != (data.n_users, data.n_items):
        raise ConfigError(
            f"model config is for {model_config.n_users} users and {model_config.n_items} items, "
            f"dataset {data.name!r} has {data.n_users} and {data.n_items}"
        )
    if world.size > 1 and config.compile != "off":
        raise ConfigError(f"compile {config.compile!r} is not supported with several processes; "
                          "pass --compile off, or train with one process")
    rng = seed_everything(config.seed)
    model = SSEPT(model_config)
    model.seed_dropout(config.seed)
    order_rng = None  # one process: `rng` draws the order too
    if world.size > 1:
        order_rng, rng = rng, rank_streams(model, config.seed, world.rank)
    if init_from is not None:
        ckpt = read_checkpoint(init_from)
        transfer_encoder(model, ckpt, str(init_from), same_data(ckpt, data, str(init_from), log))
    model.to(dev)
    sampler = TrainSampler(split, config.batch_size, model_config.maxlen, rng, config.p_user, config.p_item,
                           config.p_sub, training_users(split, config.train_fraction, config.seed), config.bucket,
                           order_rng=order_rng, rank=world.rank, world=world.size,
                           negatives=config.negatives, negative_sampling=config.negative_sampling)
    return model, make_optimizer(model, config), sampler, rng


def _evaluate(job: Job, epoch: int) -> dict[str, float]:
    """Validation and test metrics, prefixed; a diverged model stops the run, naming the epoch."""
    row: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        for which, ev in job.evaluators.items():
            metrics = ev(job.model, job.device)
            row.update({f"{which}_{k}": v for k, v in metrics.items() if k not in ("users", "skipped_users")})
    except NonFiniteError as err:
        raise NonFiniteError(f"epoch {epoch}: {err}; {_kept(job.folder)}") from None
    row["eval_seconds"] = time.perf_counter() - t0
    return row


def _kept(folder: RunFolder | None) -> str:
    if folder is None:
        return "nothing was saved (no run folder); try a lower learning rate"
    return (f"the last good checkpoints in {folder.path} (last.pt, best.pt) are kept as they were; "
            "try a lower learning rate")


def _stop_reason(config: TrainConfig, state: State) -> str | None:
    """Why training is over after `state.epoch`, or None to go on (`stop_reason` on the state)."""
    return stop_reason(config, state.history, state.best, state.epoch)


def trained_on(device: torch.device, world: World) -> str:
    """What trains an epoch, for its history row: the device (with its torch threads on a CPU) and, with
    several processes, their count; a run resumed elsewhere shows where each of its epochs ran."""
    return device_description(device) + (f" x {world.size} processes" if world.size > 1 else "")


def _epoch(job: Job, state: State, progress: bool) -> bool:
    """Train the next epoch, validate when due and keep the best; record the epoch in `state`.

    Returns whether the validation metric improved (a new best). The loss and the metrics are the
    same on every rank, so every rank takes the same decisions.
    """
    config = job.config
    epoch = state.epoch + 1
    t0 = time.perf_counter()
    loss = train_epoch(job.trainee, job.sampler, job.optimizer, config, job.device, progress, desc=f"epoch {epoch}",
                       world=job.world)
    if not math.isfinite(loss):
        raise NonFiniteError(f"epoch {epoch}: the training loss is {loss}, the run has diverged; "
                             f"{_kept(job.folder)}")
    row: dict[str, Any] = {"epoch": epoch, "loss": loss, "seconds": time.perf_counter() - t0,
                           "device": trained_on(job.device, job.world)}
    improved = False
    if epoch % config.eval_every == 0 or epoch == config.epochs:
        row.update(_evaluate(job, epoch))
        if not state.best or row[SELECTION_METRIC] > state.best[SELECTION_METRIC]:
            improved = True
            state.best = {k: v for k, v in row.items() if k.startswith(("valid_", "test_"))} | {"epoch": epoch}
            state.best_state = {k: v.detach().cpu().clone() for k, v in job.model.state_dict().items()}
    elapsed = state.history[-1]["elapsed"] if state.history else 0.0
    row["elapsed"] = elapsed + (time.perf_counter() - t0)
    state.history.append(row)
    state.epoch = epoch
    return improved


def _save(job: Job, folder: RunFolder, state: State, improved: bool) -> None:
    """Write best.pt on an improvement; history and last.pt then, every `checkpoint_every` epochs and at the end.

    Rank 0 writes; every rank hands it its random state first (the same decision on every rank).
    """
    world = job.world
    if improved and world.main:
        folder.save_best(checkpoint_payload(job, state))
    if improved or state.epoch % job.config.checkpoint_every == 0 or _stop_reason(job.config, state):
        states = world.all_gather(process_rng_state(job.model, job.sampler))
        if world.main:
            folder.save_history(state.history)
            folder.save_last(checkpoint_payload(job, state, states if world.size > 1 else states[0]))


def fit(
    split: Split,
    model_config: SSEPTConfig,
    config: TrainConfig,
    out_dir: str | Path | None = None,
    init_from: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    log: Callable[[str], None] = tqdm.write,
    world: World = SINGLE_PROCESS,
    new_process_count: bool = False,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    splits: tuple[str, ...] = ("valid", "test"),
) -> FitResult:
    """Train a model on `split`; return the best model by validation NDCG@10 and its history.

    With several processes (`world`, from `distributed.process_group`) every rank calls `fit` alike:
    rank 0 alone writes `out_dir` and logs, and every rank returns the same result. A run resumes with
    the number of processes it was trained by, or with `new_process_count` with any number.

    `on_epoch(epoch, row)`, when given, is called after each epoch is trained and saved, with its history row
    (which holds the metrics in the epochs that were evaluated): a TensorBoard log, or a search's pruner, which
    stops the run by raising (the folder then holds a resumable checkpoint). It reads and changes nothing of the
    training. `splits` are the splits evaluated: ("valid",) keeps the test split unseen (a hyperparameter search).
    """
    if "valid" not in splits or not set(splits) <= {"valid", "test"}:
        raise ConfigError(f"splits must be ('valid',) or ('valid', 'test'), got {splits!r}")
    dev = world.device(get_device(device) if not isinstance(device, torch.device) else device)
    log, progress = world.log(log), progress and world.main
    model, optimizer, sampler, _ = training_setup(split, model_config, config, dev, init_from, world, log)
    evaluators = {w: SharedEvaluator(split, w, config.eval_protocol, config.eval_seed, config.eval_negatives,
                                     world, dev) for w in ("valid", "test") if w in splits}
    description = _description(split, model_config, config, init_from, world)
    if world.size > 1:
        same_run_on_every_rank(description, split.data, world)
    folder = RunFolder(out_dir) if out_dir is not None else None
    state = State()
    if folder is not None:
        prepare_folder(folder, description, resume, overwrite, world, new_process_count)
        if resume:
            state = restore_state(folder, model, optimizer, sampler, world, log, new_process_count, config)
    # Wrapped once restored: every rank starts from the same weights (DDP also copies rank 0's).
    job = Job(split, config, model, wrap(model, world, dev), optimizer, sampler, evaluators, dev, folder, world)

    # A finished run only reloads: no bar, whose frozen 100% would read as training done now.
    finished = _stop_reason(config, state) is not None
    bar = tqdm(total=config.epochs, initial=state.epoch, desc=f"train {split.data.name}",
               disable=not progress or finished)
    while (reason := _stop_reason(config, state)) is None:
        improved = _epoch(job, state, progress)
        row = state.history[-1]
        if SELECTION_METRIC in row:
            bar.set_postfix(loss=f"{row['loss']:.4f}", valid_ndcg=f"{row[SELECTION_METRIC]:.4f}")
        bar.update()
        if folder is not None:
            _save(job, folder, state, improved)
        if on_epoch is not None:
            on_epoch(state.epoch, dict(row))  # a copy: the hook cannot change the history
    bar.close()
    world.barrier()  # when `fit` returns on any rank, rank 0 has written everything
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    elif state.best:  # never the last weights under the best epoch's metrics
        raise CheckpointError(f"the weights of the best epoch ({state.best['epoch']}) are missing")
    model.eval()
    return FitResult(model, pd.DataFrame(state.history), state.best, folder.path if folder else None,
                     device_description(dev), reason)


# --------------------------------------------------------------------------- command line


#: Printed for `--model sasrec`, whose meaning changed: it trained SASRec with item SSE until 2026-12-03.
SASREC_NOTE = ("note: --model sasrec is SASRec as published (no SSE); SASRec with item SSE 0.1, which this name "
               "trained before 2026-12-03, is --model sse-sasrec")

#: Defaults that are sentinels, in the words `--help` shows instead of the sentinel's value.
HELP_DEFAULTS = {"attn_dropout": "same as --dropout",
                 "l2_emb": "0.0; each batch's loss gets l2_emb x the sum of squared weights of the item and user "
                           "tables (not the position table)"}


def _add_dataclass_args(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...]) -> None:
    """One `--flag` per field of `cls` (except `skip`), defaulting to None (unset) and showing the field's default."""
    for f in fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            kind = {"int": int, "float": float, "str": str}[str(f.type)]
            parser.add_argument(flag, type=kind, default=None, help=f"default: {HELP_DEFAULTS.get(f.name, f.default)}")


def main(argv: list[str] | None = None) -> int:
    """Train SSE-PT or SASRec on a dataset and write the run folder."""
    parser = argparse.ArgumentParser(prog="python -m helpers.train", description="Train SSE-PT or SASRec.")
    parser.add_argument("--dataset", required=True, help="ml-1m, wiki1000, ml-100k or a 'user item' file")
    parser.add_argument("--model", choices=tuple(settings.FAMILIES), default="ssept",
                        help="model family (helpers/settings.py): ssept; sasrec = SASRec as published (no SSE); "
                             "sse-sasrec = SASRec with item SSE 0.1")
    parser.add_argument("--recipe", choices=(*settings.RECIPES, *settings.RENAMED_RECIPES), default="defaults",
                        help="paper: the paper's ML-1M settings; reference: the same with the reference code's "
                             "attention and feed-forward dropouts; best: CE + SSE-PT++; defaults: the model's "
                             "current defaults (docs/model.md)")
    parser.add_argument("--out", default=None, help="run folder (default: runs/DATASET-MODEL-sSEED)")
    parser.add_argument("--init-from", default=None, help="checkpoint whose encoder starts the model")
    parser.add_argument("--resume", action="store_true", help="continue from the folder's last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    parser.add_argument("--new-process-count", action="store_true",
                        help="with --resume: go on with another number of processes than the run had (the weights "
                             "and the optimizer continue, the random streams start afresh)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: best available)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="under torchrun: how the processes talk; auto = nccl on CUDA, gloo on a CPU")
    parser.add_argument("--tensorboard", default=None, metavar="DIR",
                        help="write the training loss, validation metrics, learning rate and seconds per epoch to "
                             "this TensorBoard folder (rank 0 under torchrun; needs the [tune] extra)")
    _add_dataclass_args(parser, SSEPTConfig, skip=("n_users", "n_items"))
    _add_dataclass_args(parser, TrainConfig, skip=())
    args = parser.parse_args(argv)
    if args.recipe in settings.RENAMED_RECIPES:
        print(f"note: --recipe {args.recipe} is now --recipe {settings.RENAMED_RECIPES[args.recipe]}", file=sys.stderr)
        args.recipe = settings.RENAMED_RECIPES[args.recipe]
    if args.model == "sasrec" and not args.resume:
        print(SASREC_NOTE, file=sys.stderr)
    if args.tensorboard:
        require_tensorboard()  # before anything is read or written
    # Under torchrun every process runs this; without it there is no process group.
    with process_group(args.backend, get_device(args.device)) as world:
        return _train(args, world)


def _train(args: argparse.Namespace, world: World) -> int:
    """`main` after parsing, in this process's place among the processes (rank 0 prints the summary)."""
    split = leave_one_out(load(args.dataset))
    model_kw = {f.name: getattr(args, f.name) for f in fields(SSEPTConfig) if getattr(args, f.name, None) is not None}
    train_kw = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    dataset_tag = Path(str(args.dataset)).stem
    out = args.out or f"runs/{dataset_tag}-{args.model}-s{train_kw.get('seed', TrainConfig.seed)}"
    if args.resume:  # settings not given again are the stored run's
        stored = world.broadcast(RunFolder(out).stored() if world.main else None)  # rank 0 reads the folder
        for prefix, kw in (("model.", model_kw), ("train.", train_kw)):
            for key, value in stored.items():
                if key.startswith(prefix) and key[len(prefix):] not in ("n_users", "n_items"):
                    kw.setdefault(key[len(prefix):], value)
    model_config = settings.model_config(args.model, split.data.n_users, split.data.n_items, args.recipe, **model_kw)
    config = settings.train_config(args.model, args.recipe, **train_kw)
    board = TensorBoardLog(args.tensorboard, config) if args.tensorboard and world.main else None  # rank 0 writes
    try:
        result = fit(split, model_config, config, out, args.init_from, args.resume, args.overwrite, args.device,
                     progress=not args.quiet, world=world, new_process_count=args.new_process_count, on_epoch=board)
    finally:
        if board is not None:
            board.close()
    summary = {"out": str(result.out_dir), "device": result.device, "best": result.best,
               "mean_epoch_seconds": float(result.history["seconds"].mean()), "processes": world.size}
    if world.main:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    run_cli(main)
