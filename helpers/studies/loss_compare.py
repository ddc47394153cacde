"""The ML-1M loss comparison: SSE-SASRec (SASRec with item SSE) trained with each loss of `LOSS_VARIANTS`, then
a table of the runs.

Every run uses the paper recipe and the same epoch budget:

    python -m helpers.studies.loss_compare commands [--seeds 0 1] [--epochs 20]   # one training command a line
    python -m helpers.studies.loss_compare table [--csv artifacts/ml1m_loss_compare.csv]

Each run is an ordinary resumable run folder (`--resume`), so running the commands again continues them. The
table has one row per finished run: the epoch picked by validation (sampled NDCG@10, as it was trained) and
test NDCG@10 / HR@10 of that epoch's weights under both protocols, with seconds per epoch. `scripts/loss_compare.sh`
runs both steps; docs/scale.md ("The ML-1M loss comparison") reads the table.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

import pandas as pd

from helpers.data import leave_one_out
from helpers.data import load as load_dataset
from helpers.utils import atomic_write, cpu_name, run_cli

#: The losses compared: the flags each run adds to the training command.
LOSS_VARIANTS: dict[str, list[str]] = {
    "bce": ["--loss", "bce"],
    "ce": ["--loss", "ce"],
    "ss16-uniform": ["--loss", "sampled-softmax", "--negatives", "16", "--negative-sampling", "uniform"],
    "ss64-uniform": ["--loss", "sampled-softmax", "--negatives", "64", "--negative-sampling", "uniform"],
    "ss256-uniform": ["--loss", "sampled-softmax", "--negatives", "256", "--negative-sampling", "uniform"],
    "ss256-popularity": ["--loss", "sampled-softmax", "--negatives", "256", "--negative-sampling", "popularity"],
    "ss1024-uniform": ["--loss", "sampled-softmax", "--negatives", "1024", "--negative-sampling", "uniform"],
}
#: Validate (and test) every this many epochs in the comparison.
LOSS_EVAL_EVERY = 5
#: Where the runs' folders go, one per variant and seed.
RUNS = "runs/loss-compare"


def loss_command(variant: str, seed: int, epochs: int, runs: str = RUNS) -> list[str]:
    """The training command of one run of the comparison (resumable: `--resume` continues its folder)."""
    return ["python", "-m", "helpers.train", "--dataset", "ml-1m", "--model", "sse-sasrec", "--recipe", "paper",
            *LOSS_VARIANTS[variant], "--epochs", str(epochs), "--eval-every", str(LOSS_EVAL_EVERY),
            "--seed", str(seed), "--quiet", "--resume", "--out", f"{runs}/{variant}-s{seed}"]


def loss_table(runs: Path, variants: list[str], seeds: list[int], epochs: int) -> pd.DataFrame:
    """One row per finished run of the comparison: its best epoch by validation (sampled NDCG@10, as it was
    trained), test NDCG@10 / HR@10 of that epoch's weights under both protocols, seconds per epoch."""
    import torch

    from helpers.evaluate import Evaluator
    from helpers.model import load_checkpoint
    from helpers.runs import RunFolder

    split = leave_one_out(load_dataset("ml-1m"))
    evaluators = {p: Evaluator(split, "test", p) for p in ("sampled", "full")}
    rows = []
    for variant in variants:
        for seed in seeds:
            folder = RunFolder(runs / f"{variant}-s{seed}")
            if not folder.best.exists() or not folder.history.exists():
                continue
            history = pd.read_csv(folder.history)
            model, ckpt = load_checkpoint(folder.best, torch.device("cpu"))
            train = ckpt["train"]
            row: dict[str, Any] = {"variant": variant, "seed": seed, "loss": train["loss"],
                                   "negatives": train.get("negatives", 0),
                                   "negative_sampling": train.get("negative_sampling", "") if train.get("negatives")
                                   else "", "epochs_done": int(history["epoch"].max()), "epochs_planned": epochs,
                                   "best_epoch": int(ckpt["best"]["epoch"]),
                                   "valid_sampled_ndcg@10": ckpt["best"]["valid_ndcg@10"]}
            for protocol, ev in evaluators.items():
                metrics = ev(model)
                row[f"test_{protocol}_ndcg@10"] = metrics["ndcg@10"]
                row[f"test_{protocol}_hr@10"] = metrics["hr@10"]
            row["recorded_test_sampled_ndcg@10"] = ckpt["best"]["test_ndcg@10"]
            row["seconds_per_epoch"] = float(history["seconds"].median())
            row["command"] = shlex.join(loss_command(variant, seed, epochs, str(runs)))
            row["cpu"] = cpu_name()
            rows.append(row)
    return pd.DataFrame(rows)


def commands(args: argparse.Namespace) -> int:
    """Print the comparison's training commands, one a line, every variant of a seed before the next seed."""
    for seed in args.seeds:
        for variant in args.variants:
            print(shlex.join(loss_command(variant, seed, args.epochs, args.runs)))
    return 0


def table(args: argparse.Namespace) -> int:
    """Tabulate the finished runs into `--csv` and print the table."""
    frame = loss_table(Path(args.runs), args.variants, args.seeds, args.epochs)
    text = frame.to_csv(index=False)
    atomic_write(Path(args.csv), lambda f: f.write(text.encode()))
    print(frame.drop(columns="command").round(4).to_string())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Print the comparison's `commands`, or tabulate its runs (`table`)."""
    parser = argparse.ArgumentParser(prog="python -m helpers.studies.loss_compare",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("commands", "table"))
    parser.add_argument("--variants", nargs="+", default=list(LOSS_VARIANTS), choices=list(LOSS_VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--runs", default=RUNS)
    parser.add_argument("--csv", default="artifacts/ml1m_loss_compare.csv")
    args = parser.parse_args(argv)
    return {"commands": commands, "table": table}[args.what](args)


if __name__ == "__main__":
    run_cli(main)
