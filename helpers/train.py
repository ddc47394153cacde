"""Training: `fit(...)` and `python -m helpers.train`.

- Adam (betas 0.9, 0.98), BCE with one negative per position, full softmax CE, or their sum.
- The training step never waits for the device (no data-dependent shapes, the loss is
  summed on the device and read once per epoch), so `compile` (torch.compile, optionally
  with CUDA graphs) can capture it whole on a GPU.
- Validation every `eval_every` epochs; the best epoch by validation NDCG@10 is kept
  (`best.pt`) and its test metrics are the ones reported.
- Checkpoints every `checkpoint_every` epochs and at each improvement. Each write is
  atomic, and the previous good checkpoint is kept, so a run killed at any moment
  resumes (`resume=True`) to exactly the weights and metrics of an uninterrupted run
  on the CPU.
- `init_from=CKPT` copies the encoder (blocks, position embeddings, final layer norm)
  and, when the dataset is the same, the user and item tables too.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from helpers.checkpoint import read_checkpoint, restore_rng_state, rng_state, save_checkpoint
from helpers.data import Split, leave_one_out, load
from helpers.errors import CheckpointError, ConfigError
from helpers.evaluate import Evaluator
from helpers.model import SSEPT, SSEPTConfig, load_model_state
from helpers.sampler import Batch, TrainSampler, prefetch
from helpers.utils import atomic_write, device_description, get_device, run_cli, seed_everything

LOSSES = ("bce", "ce", "bce+ce")
#: torch.compile modes for the training step ("off": eager).
COMPILE_MODES = ("off", "default", "reduce-overhead")
RUN_FILE = "run.json"
#: Settings that may change between a run and its resumption.
RESUMABLE_CHANGES = ("train.epochs",)
#: Values that runs recorded before a setting existed were trained with.
LEGACY_SETTINGS = {"train.chunks": 1, "train.compile": "off"}


@dataclass
class TrainConfig:
    """How to train; stored in every checkpoint and in `run.json`."""

    epochs: int = 200  # total epochs (one epoch = every training user once)
    batch_size: int = 128  # sequences per batch
    lr: float = 1e-3  # Adam learning rate
    beta1: float = 0.9  # Adam beta1
    beta2: float = 0.98  # Adam beta2
    loss: str = "bce"  # "bce" (one sampled negative per position), "ce" (softmax over all items) or "bce+ce"
    l2_emb: float = 0.0  # L2 penalty on the item and user tables
    p_user: float = 0.92  # user SSE: probability of replacing a sequence's user id
    p_item: float = 0.1  # item SSE: probability of replacing an input item and its target
    p_sub: float = 0.0  # SSE-PT++: probability of a random window for histories longer than maxlen
    bucket: int = 0  # >0: sort runs of bucket*batch_size users by length: faster, but see README (Speed)
    chunks: int = 0  # compute each batch as up to N pieces of similar length (same gradient); 0: auto
    eval_every: int = 20  # validate (and test) every N epochs, and after the last epoch
    eval_protocol: str = "sampled"  # protocol that picks the best epoch
    eval_seed: int = 0  # seed of the evaluation negatives
    eval_negatives: int = 100  # negatives per user in the sampled protocol
    checkpoint_every: int = 1  # write last.pt every N epochs (always on improvement and at the end)
    seed: int = 0  # seed of the sampler, initialisation and dropout
    train_fraction: float = 1.0  # share of training users used (nested subsets for one seed)
    freeze_encoder: bool = False  # train only the user/item tables (transfer setup)
    encoder_lr_scale: float = 1.0  # learning-rate factor for the encoder (transfer setup)
    amp: bool = False  # bf16 autocast on CUDA (ignored on the CPU; slower for these sizes on an H200)
    compile: str = "off"  # torch.compile the loss: "default", or "reduce-overhead" (CUDA graphs on a GPU)

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}"),
            (self.chunks >= 0, f"chunks must be >= 0 (0: auto), got {self.chunks}"),
            (self.bucket >= 0, f"bucket must be >= 0, got {self.bucket}"),
            (self.lr > 0, f"lr must be positive, got {self.lr}"),
            (self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}"),
            (self.compile in COMPILE_MODES, f"compile must be one of {COMPILE_MODES}, got {self.compile!r}"),
            (self.eval_every >= 1, f"eval_every must be at least 1, got {self.eval_every}"),
            (self.checkpoint_every >= 1, f"checkpoint_every must be at least 1, got {self.checkpoint_every}"),
            (0.0 < self.train_fraction <= 1.0, f"train_fraction must be in (0, 1], got {self.train_fraction}"),
            (self.encoder_lr_scale >= 0, f"encoder_lr_scale must be >= 0, got {self.encoder_lr_scale}"),
        ]
        checks += [(0.0 <= getattr(self, p) <= 1.0, f"{p} must be in [0, 1], got {getattr(self, p)}")
                   for p in ("p_user", "p_item", "p_sub")]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


@dataclass
class FitResult:
    """What `fit` returns: the best model, its history and where files went."""

    model: SSEPT
    history: pd.DataFrame
    best: dict[str, Any]
    out_dir: Path | None
    device: str


# --------------------------------------------------------------------------- pieces


LossFn = Callable[..., torch.Tensor]


def loss_sum(model: SSEPT, users: torch.Tensor, seq: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor | None,
             kind: str, dense: bool) -> torch.Tensor:
    """BCE (positive vs one negative), softmax CE, or both added ("bce+ce"), summed over the
    real positions (`pos > 0`).

    Padded positions are masked out by arithmetic rather than dropped, so nothing depends
    on how many positions are real. With `dense`, CE scores every position too (ignoring
    padded targets); otherwise only the real rows are gathered first, which saves the
    padded share of the (positions x items) product but waits for the count (on a GPU).
    """
    parts = kind.split("+")
    hidden = model(users, seq)
    real = pos > 0
    total = torch.zeros((), device=hidden.device)
    if "bce" in parts:
        pos_logit = model.score_items(hidden, users, pos).float()
        neg_logit = model.score_items(hidden, users, neg).float()
        total = total + ((F.softplus(-pos_logit) + F.softplus(neg_logit)) * real).sum()
    if "ce" in parts:
        if dense:
            logits = model.score_all(hidden, users).float()
            total = total + F.cross_entropy(logits.flatten(0, 1), pos.flatten(), ignore_index=0, reduction="sum")
        else:
            rows = real.nonzero(as_tuple=True)[0]
            logits = model.score_all(hidden[real], users[rows]).float()
            total = total + F.cross_entropy(logits, pos[real], reduction="sum")
    return total


@functools.cache
def make_loss_fn(mode: str) -> LossFn:
    """`loss_sum` for "off", else its torch.compile'd version in that mode (one per mode and process).

    Compiling costs tens of seconds in the first steps (and again for each new batch shape
    until shapes are treated as dynamic); it pays off when launches, not arithmetic, bound
    the step, as on a GPU (README, Speed).
    """
    if mode == "off":
        return loss_sum
    return torch.compile(loss_sum, mode=mode)


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A batch array on `device`. On CUDA it goes through pinned memory: a copy from ordinary
    (pageable) memory would first wait for all the GPU work queued before it."""
    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def compute_loss(
    model: SSEPT, batch: Batch, device: torch.device, config: TrainConfig,
    positions: int | None = None, penalty: bool = True, loss_fn: LossFn = loss_sum,
) -> torch.Tensor:
    """The batch's loss (`loss_sum`, or a compiled `loss_fn`) divided by `positions`.

    `positions` defaults to the batch's own count of real positions (a mean). A piece of a
    split batch passes the whole batch's count, so the pieces' losses add up to the whole
    batch's mean; `penalty` adds the L2 term (once per batch). CE is dense off the CPU and
    when compiled (no data-dependent shapes), gathered on the eager CPU path.
    """
    denom = float(positions if positions is not None else max(batch.n_positions, 1))
    users, seq, pos = (to_device(a, device) for a in (batch.users, batch.seq, batch.pos))
    neg = to_device(batch.neg, device) if "bce" in config.loss.split("+") else None
    dense = device.type != "cpu" or loss_fn is not loss_sum
    loss = loss_fn(model, users, seq, pos, neg, config.loss, dense) / denom
    if penalty and config.l2_emb > 0:
        l2 = model.item_emb.weight.pow(2).sum()
        if model.user_emb is not None:
            l2 = l2 + model.user_emb.weight.pow(2).sum()
        loss = loss + config.l2_emb * l2
    return loss


def pieces_per_batch(config: TrainConfig, device: torch.device) -> int:
    """`config.chunks`, or for 0 (auto) the faster choice measured on each device (README, Speed).

    On a CPU the work grows with the padded cells, so 4 pieces of similar length win (20.6 s
    against 32.9 s per SSE-PT epoch on 2 cores); on a GPU each piece is launch-bound, so
    one whole batch wins (0.42 s against 1.82 s on an H200). The gradient is the same.
    """
    if config.chunks:
        return config.chunks
    return 4 if device.type == "cpu" else 1


def train_epoch(
    model: SSEPT, sampler: TrainSampler, optimizer: torch.optim.Optimizer, config: TrainConfig,
    device: torch.device, progress: bool = False, desc: str = "epoch",
) -> float:
    """One pass over the training users; returns the mean loss per real position.

    Each batch is one optimizer step. With more than one piece (`pieces_per_batch`) its rows
    are computed in pieces of similar length (`Batch.split`) whose gradients add up to the
    batch's. The next batch is sampled in a background thread meanwhile (`prefetch`): the
    same batches as without it.
    """
    model.train()
    use_amp = config.amp and device.type == "cuda"
    parts = pieces_per_batch(config, device)
    loss_fn = make_loss_fn(config.compile)
    acc_dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
    total = torch.zeros((), dtype=acc_dtype, device=device)
    count = 0
    for batch in tqdm(prefetch(sampler.epoch()), total=len(sampler), desc=desc, leave=False, disable=not progress):
        n = max(batch.n_positions, 1)
        optimizer.zero_grad(set_to_none=True)
        for i, piece in enumerate(batch.split(parts)):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = compute_loss(model, piece, device, config, positions=n, penalty=i == 0, loss_fn=loss_fn)
            loss.backward()
            total += loss.detach().to(total.dtype) * batch.n_positions
        optimizer.step()
        count += batch.n_positions
    return total.item() / max(count, 1)  # the only wait for the device in an epoch


def transfer_encoder(model: SSEPT, ckpt: dict[str, Any], source: str, same_data: bool) -> list[str]:
    """Copy blocks, position embeddings and the final norm (and the tables if `same_data`)."""
    src = SSEPTConfig.from_dict(ckpt["config"])
    dst = model.config
    for attr in ("dim", "maxlen", "num_blocks", "num_heads"):
        if getattr(src, attr) != getattr(dst, attr):
            raise ConfigError(
                f"init_from {source}: its {attr} is {getattr(src, attr)} but the new config has "
                f"{getattr(dst, attr)}; the encoder can only be copied between equal shapes"
            )
    prefixes = ("pos_emb.", "blocks.", "final_norm.")
    if same_data and (src.n_users, src.n_items, src.user_dim) == (dst.n_users, dst.n_items, dst.user_dim):
        prefixes += ("item_emb.", "user_emb.")
    state = {k: v for k, v in ckpt["model"].items() if k.startswith(prefixes)}
    own = model.state_dict()
    own.update(state)
    load_model_state(model, own, source)
    return sorted(state)


def make_optimizer(model: SSEPT, config: TrainConfig) -> torch.optim.Adam:
    """Adam over the tables and the encoder (frozen or with its own learning rate)."""
    encoder = {id(p) for p in model.encoder_parameters()}
    tables = [p for p in model.parameters() if id(p) not in encoder]
    groups: list[dict[str, Any]] = [{"params": tables, "lr": config.lr}]
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
    order = np.random.default_rng([seed, 7]).permutation(users)
    return np.sort(order[: max(1, math.ceil(fraction * users.size))])


def _flatten(description: dict[str, Any]) -> dict[str, Any]:
    """{"train": {"lr": 1}} -> {"train.lr": 1}, for naming what differs between two runs."""
    flat: dict[str, Any] = {}
    for key, value in description.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


class RunFolder:
    """The files of one run: run.json, last.pt (+ prev.pt), best.pt, history.csv."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.run, self.last, self.prev, self.best = (self.path / n for n in (RUN_FILE, "last.pt", "prev.pt", "best.pt"))
        self.fresh = self.path / "last.pt.new"
        self.history = self.path / "history.csv"

    def exists(self) -> bool:
        """Does the folder already hold a run."""
        return self.run.exists() or self.last.exists() or self.fresh.exists()

    def stored(self) -> dict[str, Any]:
        """The settings in run.json, flattened ("train.lr": ...), with settings added later
        given the values older runs used; empty if there is no run.json."""
        if not self.run.exists():
            return {}
        return LEGACY_SETTINGS | _flatten(json.loads(self.run.read_text()))

    def prepare(self, description: dict[str, Any], resume: bool, overwrite: bool) -> None:
        """Refuse to mix runs: a different run needs `overwrite`; the same one needs `resume`."""
        if self.exists() and not overwrite:
            stored = self.stored()
            current = _flatten(description)
            differs = sorted(
                f"{k} {stored.get(k)!r} -> {current.get(k)!r}" for k in set(stored) | set(current)
                if k not in RESUMABLE_CHANGES and stored.get(k) != current.get(k)
            )
            if differs:
                raise ConfigError(
                    f"{self.path} already holds a different run (differs in: {', '.join(differs)}); "
                    "choose another folder, or pass overwrite (--overwrite) to replace it"
                )
            if not resume:
                raise ConfigError(
                    f"{self.path} already holds this run; pass resume (--resume) to continue it "
                    "or overwrite (--overwrite) to start over"
                )
        if overwrite:
            for p in (self.last, self.prev, self.fresh, self.best, self.history):
                p.unlink(missing_ok=True)
        text = json.dumps(description, indent=2, sort_keys=True)
        atomic_write(self.run, lambda f: f.write(text.encode()))

    def save_last(self, payload: dict[str, Any]) -> None:
        """Write last.pt, keeping the one before as prev.pt; safe against a kill at any point."""
        save_checkpoint(self.fresh, payload)
        if self.last.exists():
            self.last.replace(self.prev)
        self.fresh.replace(self.last)

    def load_latest(self, log: Callable[[str], None]) -> dict[str, Any] | None:
        """The newest readable checkpoint; an unreadable one is reported and skipped."""
        found = []
        for path in (self.last, self.fresh, self.prev):
            if not path.exists():
                continue
            try:
                found.append(read_checkpoint(path))
            except CheckpointError as err:
                log(f"warning: {err}; falling back to the previous good checkpoint")
        return max(found, key=lambda c: c["epoch"]) if found else None


def _eval_row(evaluators: dict[str, Evaluator], model: SSEPT, device: torch.device) -> dict[str, float]:
    row: dict[str, float] = {}
    t0 = time.perf_counter()
    for which, ev in evaluators.items():
        metrics = ev(model, device)
        row.update({f"{which}_{k}": v for k, v in metrics.items() if k not in ("users", "skipped_users")})
    row["eval_seconds"] = time.perf_counter() - t0
    return row


# --------------------------------------------------------------------------- fit


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
) -> FitResult:
    """Train a model on `split`; return the best model by validation NDCG@10 and its history."""
    data = split.data
    if (model_config.n_users, model_config.n_items) != (data.n_users, data.n_items):
        raise ConfigError(
            f"model config is for {model_config.n_users} users and {model_config.n_items} items, "
            f"dataset {data.name!r} has {data.n_users} and {data.n_items}"
        )
    dev = get_device(device) if not isinstance(device, torch.device) else device
    rng = seed_everything(config.seed)
    model = SSEPT(model_config)
    model.seed_dropout(config.seed)
    if init_from is not None:
        ckpt = read_checkpoint(init_from)
        same = ckpt.get("data", {}).get("name") == data.name
        transfer_encoder(model, ckpt, str(init_from), same)
    model.to(dev)
    optimizer = make_optimizer(model, config)
    sampler = TrainSampler(split, config.batch_size, model_config.maxlen, rng, config.p_user, config.p_item,
                           config.p_sub, training_users(split, config.train_fraction, config.seed), config.bucket)
    evaluators = {w: Evaluator(split, w, config.eval_protocol, config.eval_seed, config.eval_negatives)
                  for w in ("valid", "test")}
    description = {"model": asdict(model_config), "train": asdict(config), "dataset": data.name,
                   "init_from": str(init_from) if init_from else None}

    folder = RunFolder(out_dir) if out_dir is not None else None
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {}
    best_state: dict[str, torch.Tensor] | None = None
    start_epoch = 0
    if folder is not None:
        folder.prepare(description, resume, overwrite)
        latest = folder.load_latest(log) if resume else None
        if latest is not None:
            load_model_state(model, latest["model"], str(folder.last))
            optimizer.load_state_dict(latest["optimizer"])
            restore_rng_state(rng, model.dropout_rng, latest["rng"])
            history, best, start_epoch = list(latest["history"]), dict(latest["best"]), int(latest["epoch"])
            if folder.best.exists():
                best_state = read_checkpoint(folder.best)["model"]
            log(f"resuming {folder.path} from epoch {start_epoch}")
        elif resume:
            log(f"no checkpoint in {folder.path} yet: starting from epoch 0")

    def payload(epoch: int, with_state: bool) -> dict[str, Any]:
        return {
            "config": asdict(model_config), "train": asdict(config),
            "data": {"name": data.name, "n_users": data.n_users, "n_items": data.n_items},
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict() if with_state else None,
            "epoch": epoch, "history": history, "best": best,
            "rng": rng_state(rng, model.dropout_rng) if with_state else None,
        }

    elapsed = history[-1]["elapsed"] if history else 0.0
    epochs = tqdm(range(start_epoch + 1, config.epochs + 1), desc=f"train {data.name}", disable=not progress,
                  initial=start_epoch, total=config.epochs)
    for epoch in epochs:
        t0 = time.perf_counter()
        loss = train_epoch(model, sampler, optimizer, config, dev, progress, desc=f"epoch {epoch}")
        row: dict[str, Any] = {"epoch": epoch, "loss": loss, "seconds": time.perf_counter() - t0}
        improved = False
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            row.update(_eval_row(evaluators, model, dev))
            key = "valid_ndcg@10"
            if not best or row[key] > best[key]:
                improved = True
                best = {k: v for k, v in row.items() if k.startswith(("valid_", "test_"))} | {"epoch": epoch}
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            epochs.set_postfix(loss=f"{row['loss']:.4f}", valid_ndcg=f"{row[key]:.4f}")
        elapsed += time.perf_counter() - t0
        row["elapsed"] = elapsed
        history.append(row)
        if folder is not None:
            if improved:
                save_checkpoint(folder.best, payload(epoch, with_state=False))
            if improved or epoch % config.checkpoint_every == 0 or epoch == config.epochs:
                save_checkpoint_history(folder, history)
                folder.save_last(payload(epoch, with_state=True))

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    frame = pd.DataFrame(history)
    return FitResult(model, frame, best, folder.path if folder else None, device_description(dev))


def save_checkpoint_history(folder: RunFolder, history: list[dict[str, Any]]) -> None:
    """history.csv beside the checkpoints (atomic)."""
    text = pd.DataFrame(history).to_csv(index=False)
    atomic_write(folder.history, lambda f: f.write(text.encode()))


# --------------------------------------------------------------------------- command line


def _add_dataclass_args(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...]) -> None:
    for f in fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            kind = {"int": int, "float": float, "str": str}[str(f.type)]
            parser.add_argument(flag, type=kind, default=None, help=f"default: {f.default}")


def main(argv: list[str] | None = None) -> int:
    """Train SSE-PT or SASRec on a dataset and write the run folder."""
    parser = argparse.ArgumentParser(prog="python -m helpers.train", description="Train SSE-PT or SASRec.")
    parser.add_argument("--dataset", required=True, help="ml-1m, wiki1000, ml-100k or a 'user item' file")
    parser.add_argument("--model", choices=("ssept", "sasrec"), default="ssept",
                        help="sasrec = user_dim 0 and no user SSE")
    parser.add_argument("--out", default=None, help="run folder (default: runs/DATASET-MODEL-sSEED)")
    parser.add_argument("--init-from", default=None, help="checkpoint whose encoder starts the model")
    parser.add_argument("--resume", action="store_true", help="continue from the folder's last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: best available)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_dataclass_args(parser, SSEPTConfig, skip=("n_users", "n_items"))
    _add_dataclass_args(parser, TrainConfig, skip=())
    args = parser.parse_args(argv)

    split = leave_one_out(load(args.dataset))
    model_kw = {f.name: getattr(args, f.name) for f in fields(SSEPTConfig) if getattr(args, f.name, None) is not None}
    train_kw = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    if args.model == "sasrec":
        model_kw["user_dim"] = 0
        train_kw.setdefault("p_user", 0.0)
    dataset_tag = Path(str(args.dataset)).stem
    out = args.out or f"runs/{dataset_tag}-{args.model}-s{train_kw.get('seed', TrainConfig.seed)}"
    if args.resume:  # settings not given again are the stored run's
        stored = RunFolder(out).stored()
        for prefix, kw in (("model.", model_kw), ("train.", train_kw)):
            for key, value in stored.items():
                if key.startswith(prefix) and key[len(prefix):] not in ("n_users", "n_items"):
                    kw.setdefault(key[len(prefix):], value)
    model_config = SSEPTConfig(n_users=split.data.n_users, n_items=split.data.n_items, **model_kw)
    config = TrainConfig(**train_kw)
    result = fit(split, model_config, config, out, args.init_from, args.resume, args.overwrite, args.device,
                 progress=not args.quiet)
    summary = {"out": str(result.out_dir), "device": result.device, "best": result.best,
               "mean_epoch_seconds": float(result.history["seconds"].mean())}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    run_cli(main)
