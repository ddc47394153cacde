"""The short-history study: which block form and dropouts suit short histories.

Proxies for "users with about ten items each", built from data we have:
- `ml-1m-last15` / `ml-1m-last10`: ML-1M keeping each user's last 15 / 10 interactions
  (ids unchanged; the split then leaves 13 / 8 items for training);
- `ml-100k`: MovieLens-100K (raw `u.data` converted, 943 users, histories of 20 to 737);
- `ml-1m`: the full data, with the paper's long-history settings (maxlen 200, dropout 0.2).

Settings of the SASRec paper for each kind (`SETTINGS`): SASRec (width 50, no user part,
no SSE), 2 blocks, 1 head, BCE, Adam lr 1e-3, batch 128; short histories use maxlen 50
and dropout 0.5. The variants (`VARIANTS`) add the reference implementations'
attention-weight dropout and inner feed-forward dropout (at the same rate as `dropout`)
and change the block form. Each run is `helpers.train.fit` in a run folder (resumable),
best epoch by validation NDCG@10 (sampled protocol), test metrics at that epoch.

Command line (one run, appended to the results CSV):
    python -m helpers.studies.short_histories --dataset ml-1m-last15 --variant post-norm --seed 0 \\
        --epochs 200 --out runs/short/ml-1m-last15-post-norm-s0 --csv artifacts/short_histories.csv
and `python -m helpers.studies.short_histories --table artifacts/short_histories.csv` prints the
mean over seeds as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from helpers import settings
from helpers.data import SequenceData, leave_one_out, load
from helpers.errors import ConfigError
from helpers.layers import DROPOUT_LEVELS, AttentionDropout, keep_mask
from helpers.losses import compute_loss
from helpers.machine import machine_line
from helpers.model import SSEPT
from helpers.sampler import TrainSampler
from helpers.settings import SSEPTConfig, TrainConfig
from helpers.train import fit, make_optimizer, pieces_per_batch
from helpers.utils import atomic_write, run_cli, write_json

#: Proxy name -> (source dataset, interactions kept per user (0: all), settings kind).
PROXIES: dict[str, tuple[str, int, str]] = {
    "ml-1m-last15": ("ml-1m", 15, "short"),
    "ml-1m-last10": ("ml-1m", 10, "short"),
    "ml-100k": ("ml-100k", 0, "short"),
    "ml-1m": ("ml-1m", 0, "long"),
}

#: The SASRec paper's settings per kind of data (model part, training part).
SETTINGS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "short": ({"item_dim": 50, "user_dim": 0, "maxlen": 50, "num_blocks": 2, "num_heads": 1, "dropout": 0.5},
              {"loss": "bce", "p_user": 0.0, "p_item": 0.0, "lr": 1e-3, "batch_size": 128}),
    "long": ({"item_dim": 50, "user_dim": 0, "maxlen": 200, "num_blocks": 2, "num_heads": 1, "dropout": 0.2},
             {"loss": "bce", "p_user": 0.0, "p_item": 0.0, "lr": 1e-3, "batch_size": 128}),
}

#: Variant -> model settings on top of the kind's; "DROPOUT" stands for the kind's dropout rate.
VARIANTS: dict[str, dict[str, Any]] = {
    "original": {},
    "attn-dropout": {"attn_dropout": "DROPOUT"},
    "ffn-dropout": {"ffn_dropout": "DROPOUT"},
    "post-norm": {"block": "post-norm"},
    "pre-norm": {"block": "pre-norm"},
    "reference": {"block": "post-norm", "attn_dropout": "DROPOUT", "ffn_dropout": "DROPOUT"},
}

#: Not a variant of the paper's settings but what a user gets: the command line's SASRec
#: (`python -m helpers.train --model sse-sasrec --maxlen 50 --dropout 0.5`), i.e. the kind's maxlen
#: and dropout with every other model and training setting at its default (item SSE included).
CLI_DEFAULT = "cli-default"
#: Every name `--variant` takes, in the order of the results table.
VARIANT_NAMES = (*VARIANTS, CLI_DEFAULT)


def keep_last(data: SequenceData, k: int, name: str) -> SequenceData:
    """Each user's last `k` interactions (all of them if fewer), id spaces unchanged."""
    lengths = data.lengths[: data.n_users + 1]
    kept = np.minimum(lengths, k)
    ends = data.offsets[1 : data.n_users + 2]
    rows = np.concatenate([np.arange(e - n, e) for e, n in zip(ends.tolist(), kept.tolist())]).astype(np.int64)
    offsets = np.zeros(data.n_users + 2, dtype=np.int64)
    np.cumsum(kept, out=offsets[1:])
    return SequenceData(name, data.n_users, data.n_items, offsets, data.items[rows])


def proxy_dataset(name: str) -> SequenceData:
    """One of `PROXIES` as sequences."""
    if name not in PROXIES:
        raise ConfigError(f"unknown study dataset {name!r}; known: {', '.join(PROXIES)}")
    source, k, _ = PROXIES[name]
    data = load(source)
    return keep_last(data, k, name) if k else data


def study_configs(dataset: str, variant: str, n_users: int, n_items: int, seed: int, epochs: int,
                  eval_every: int) -> tuple[SSEPTConfig, TrainConfig]:
    """The model and training settings of one run of the study."""
    if variant not in VARIANT_NAMES:
        raise ConfigError(f"unknown variant {variant!r}; known: {', '.join(VARIANT_NAMES)}")
    model_kw, train_kw = SETTINGS[PROXIES[dataset][2]]
    if variant == CLI_DEFAULT:
        kind = {k: model_kw[k] for k in ("maxlen", "dropout")}
        return (settings.model_config("sse-sasrec", n_users, n_items, "defaults", **kind),
                settings.train_config("sse-sasrec", "defaults", seed=seed, epochs=epochs, eval_every=eval_every))
    extra = {k: model_kw["dropout"] if v == "DROPOUT" else v for k, v in VARIANTS[variant].items()}
    # Every variant setting is written out, so a run does not depend on the dataclass defaults.
    model = SSEPTConfig(n_users=n_users, n_items=n_items, **model_kw,
                        **{"attn_dropout": 0.0, "ffn_dropout": 0.0, "block": "sasrec", **extra})
    train = TrainConfig(**train_kw, seed=seed, epochs=epochs, eval_every=eval_every)
    return model, train


def run_one(dataset: str, variant: str, seed: int, out: str | Path, epochs: int, eval_every: int,
            progress: bool = False) -> dict[str, Any]:
    """Train (or resume) one run and return its results row."""
    data = proxy_dataset(dataset)
    split = leave_one_out(data)
    model_cfg, train_cfg = study_configs(dataset, variant, data.n_users, data.n_items, seed, epochs, eval_every)
    t0 = time.perf_counter()
    result = fit(split, model_cfg, train_cfg, out, resume=True, device="cpu", progress=progress)
    history, best = result.history, result.best
    evaluated = history.dropna(subset=["valid_ndcg@10"])
    row: dict[str, Any] = {
        "dataset": dataset, "variant": variant, "seed": seed,
        "best_epoch": int(best["epoch"]), "epochs_run": int(history["epoch"].max()),
        "last_eval_epoch": int(evaluated["epoch"].max()),
        "valid_ndcg@10": best["valid_ndcg@10"], "valid_hr@10": best["valid_hr@10"],
        "test_ndcg@10": best["test_ndcg@10"], "test_hr@10": best["test_hr@10"],
        "final_valid_ndcg@10": float(evaluated["valid_ndcg@10"].iloc[-1]),
        "train_seconds": round(float(history["seconds"].sum()), 1),
        "eval_seconds": round(float(evaluated["eval_seconds"].sum()), 1),
        "wall_seconds_this_call": round(time.perf_counter() - t0, 1),
        "machine": machine_line(threads=True), "out": str(out),
    }
    row.update({f"model.{k}": v for k, v in asdict(model_cfg).items() if k not in ("n_users", "n_items")})
    row.update({f"train.{k}": getattr(train_cfg, k) for k in
                ("epochs", "eval_every", "batch_size", "lr", "loss", "p_user", "p_item", "eval_protocol")})
    return row


def append_row(csv: str | Path, row: dict[str, Any]) -> pd.DataFrame:
    """Add `row` to the CSV, replacing an earlier row of the same dataset, variant, seed and epochs."""
    path = Path(csv)
    frame = pd.read_csv(path) if path.exists() else pd.DataFrame()
    if not frame.empty:
        same = ((frame["dataset"] == row["dataset"]) & (frame["variant"] == row["variant"])
                & (frame["seed"] == row["seed"]) & (frame["train.epochs"] == row["train.epochs"]))
        frame = frame[~same]
    frame = pd.concat([frame, pd.DataFrame([row])], ignore_index=True)
    text = frame.to_csv(index=False)
    atomic_write(path, lambda f: f.write(text.encode()))
    return frame


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per dataset, epoch budget and variant (with the seeds' best epochs).

    `final_valid_ndcg@10` (validation at the last epoch) beside the best shows how flat the
    curve is at the end of the budget.
    """
    keys = ["dataset", "train.epochs", "variant"]
    order = {v: i for i, v in enumerate(VARIANT_NAMES)}
    grouped = frame.groupby(keys, sort=False)
    metrics = ["valid_ndcg@10", "final_valid_ndcg@10", "test_ndcg@10", "test_hr@10", "train_seconds"]
    out = grouped[[m for m in metrics if m in frame]].mean()
    out["seeds"] = grouped["seed"].count()
    out["best_epochs"] = grouped["best_epoch"].apply(lambda s: "/".join(str(int(e)) for e in s))
    out = out.reset_index()
    out["_order"] = out["variant"].map(order)
    return out.sort_values(["dataset", "train.epochs", "_order"]).drop(columns="_order").reset_index(drop=True)


def markdown(frame: pd.DataFrame) -> str:
    """The summary as a Markdown table (4 decimals; seconds rounded)."""
    cols = ["dataset", "train.epochs", "variant", "seeds", "valid_ndcg@10", "final_valid_ndcg@10", "test_ndcg@10",
            "test_hr@10", "best_epochs", "train_seconds"]
    cols = [c for c in cols if c in frame]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in frame[cols].iterrows():
        cells = [f"{r[c]:.4f}" if isinstance(r[c], float) and c != "train_seconds" else str(r[c]) for c in cols]
        cells[-1] = f"{r['train_seconds']:.0f}"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _torch_attention_dropout(self: AttentionDropout, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             attn_mask: torch.Tensor) -> torch.Tensor:
    """torch's own attention dropout (`dropout_p`), which takes the unfused path on the CPU."""
    p = self.p if self.training else 0.0
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)


def _train_steps(model: SSEPT, optimizer: torch.optim.Optimizer, batches: list[Any], train: TrainConfig) -> None:
    """One optimiser step per batch, computed in pieces as `train_epoch` does on the CPU."""
    cpu = torch.device("cpu")
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        n = max(batch.n_positions, 1)
        for i, piece in enumerate(batch.split(pieces_per_batch(train, cpu))):
            compute_loss(model, piece, cpu, train, positions=n, penalty=i == 0).backward()
        optimizer.step()


def _fused_doubled_keys_attention_dropout(self: AttentionDropout, q: torch.Tensor, k: torch.Tensor,
                                          v: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
    """An exact attention dropout that stays in the fused CPU kernel: every key twice, a kept copy
    (value scaled by 1 / (1 - p)) and a dropped copy (value zero), the mask opening one of the two;
    the softmax denominator is the full one. Same NumPy masks as `AttentionDropout`."""
    if not self.training or self.threshold == 0:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    b, h, n_q, _ = q.shape
    keep = keep_mask((b, h, n_q, k.shape[2]), self.threshold, self.rng)
    allowed = attn_mask.expand(b, h, n_q, k.shape[2])
    mask = torch.cat([allowed & keep, allowed & ~keep], dim=-1)
    scale = DROPOUT_LEVELS / (DROPOUT_LEVELS - self.threshold)
    return F.scaled_dot_product_attention(
        q, torch.cat([k, k], dim=2), torch.cat([v * scale, torch.zeros_like(v)], dim=2), attn_mask=mask
    )


#: Seed of the timing's batches and model initialisation (every mode times the same ones).
TIMING_SEED = 0

#: Timed modes: how attention (with dropout 0.2, except "none") is computed.
TIMING_MODES = {
    "none": None,  # no attention dropout: the fused kernel
    "fused-doubled-keys": _fused_doubled_keys_attention_dropout,
    "torch-dropout_p": _torch_attention_dropout,
    "unfused-numpy-mask": None,  # AttentionDropout as the model computes it on the CPU
}


def time_attention_dropout(batches: int = 10, rounds: int = 5, dataset: str = "ml-1m") -> dict[str, Any]:
    """Seconds per training batch on ML-1M with and without attention dropout, in one process.

    Models: SASRec and SSE-PT at the ML-1M settings (maxlen 200, dropout 0.2; SSE-PT with
    user SSE). Modes: no attention dropout; attention dropout 0.2 kept in the fused kernel
    with doubled keys; the same through torch's `dropout_p` (unfused on the CPU); the
    unfused path with NumPy masks (what `AttentionDropout` does). Each round times the same
    `batches` batches in every mode, in turn, so slow phases of a shared machine hit every
    mode alike; the median round counts.
    """
    split = leave_one_out(load(dataset))
    modes = tuple(TIMING_MODES)
    models = {"sasrec": {"user_dim": 0}, "ssept": {}}
    results: dict[str, Any] = {"machine": machine_line(threads=True), "dataset": dataset, "batches": batches,
                               "rounds": rounds}
    original = AttentionDropout.forward
    for name, model_kw in models.items():
        train = TrainConfig(p_user=0.92 if name == "ssept" else 0.0, p_item=0.1 if name == "ssept" else 0.0)
        maxlen = SETTINGS["long"][0]["maxlen"]  # the ML-1M window, 200
        sampler = TrainSampler(split, train.batch_size, maxlen, np.random.default_rng(TIMING_SEED), train.p_user,
                               train.p_item)
        fixed = [b for _, b in zip(range(batches), sampler.epoch())]
        times: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(rounds):
            for mode in modes:
                torch.manual_seed(TIMING_SEED)
                cfg = SSEPTConfig(n_users=split.data.n_users, n_items=split.data.n_items, dropout=0.2,
                                  attn_dropout=0.0 if mode == "none" else 0.2, **model_kw)
                model = SSEPT(cfg).train()
                optimizer = make_optimizer(model, train)
                AttentionDropout.forward = TIMING_MODES[mode] or original
                try:
                    _train_steps(model, optimizer, fixed[:1], train)  # warm-up, untimed
                    t0 = time.perf_counter()
                    _train_steps(model, optimizer, fixed, train)
                    times[mode].append((time.perf_counter() - t0) / batches)
                finally:
                    AttentionDropout.forward = original
        per_batch = {m: float(np.median(t)) for m, t in times.items()}
        results[name] = {
            "seconds_per_batch": per_batch,
            "epoch_seconds_estimate": {m: t * len(sampler) for m, t in per_batch.items()},
            "ratio_to_none": {m: t / per_batch["none"] for m, t in per_batch.items()},
            "all_rounds": times,
        }
    return results


def main(argv: list[str] | None = None) -> int:
    """Run one study run (and append its row), or print the summary table."""
    parser = argparse.ArgumentParser(prog="python -m helpers.studies.short_histories",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=tuple(PROXIES), help="study dataset")
    parser.add_argument("--variant", choices=VARIANT_NAMES, help="model variant")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--epochs", type=int, default=200, help="epoch budget")
    parser.add_argument("--eval-every", type=int, default=10, help="validate every N epochs")
    parser.add_argument("--out", default=None, help="run folder (default: runs/short/DATASET-VARIANT-sSEED)")
    parser.add_argument("--csv", default="artifacts/short_histories.csv", help="results CSV to append to")
    parser.add_argument("--table", default=None, help="print the summary of this CSV and exit")
    parser.add_argument("--time-attention", default=None, metavar="JSON",
                        help="time ML-1M training batches with and without attention dropout; write JSON and exit")
    parser.add_argument("--progress", action="store_true", help="progress bars")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.time_attention:
        timing = time_attention_dropout()
        write_json(args.time_attention, timing)
        print(json.dumps(timing, indent=2))
        return 0
    if args.table:
        print(markdown(summary_table(pd.read_csv(args.table))))
        return 0
    if not (args.dataset and args.variant):
        parser.error("--dataset and --variant are required (or --table)")
    out = args.out or f"runs/short/{args.dataset}-{args.variant}-s{args.seed}"
    row = run_one(args.dataset, args.variant, args.seed, out, args.epochs, args.eval_every, args.progress)
    append_row(args.csv, row)
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    run_cli(main)
