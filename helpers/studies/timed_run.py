"""The record of a timed training run: `python -m helpers.studies.timed_run FOLDER --wall S --mode M --out FILE`.

The GPU speed target (200 faithful SSE-PT epochs on ML-1M, validation every 20 epochs, in at
most a minute of wall time, test sampled NDCG@10 >= 0.60) is checked on the record of one real
run, never by a timed test. `scripts/gpu_speed.sh` times the whole process (start, data loading
and compiling included) and passes that wall time here; the run folder's history gives the rest:
the training loop's own time, the first epoch (which includes compiling) apart from the others,
the evaluations; the run's best.pt gives the test metrics at the epoch picked by validation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from helpers.checkpoint import read_checkpoint
from helpers.errors import ConfigError
from helpers.runs import RunFolder
from helpers.studies.records import timestamp
from helpers.train import SELECTION_METRIC
from helpers.utils import device_description, get_device, run_cli, write_json

#: The target of the timed run: wall seconds at most, test sampled NDCG@10 at least.
TARGET_WALL_SECONDS = 60.0
TARGET_TEST_NDCG = 0.60


def target_met(wall_seconds: float, test_ndcg: float) -> bool:
    """Both halves of the target: the time and the quality."""
    return wall_seconds <= TARGET_WALL_SECONDS and test_ndcg >= TARGET_TEST_NDCG


def timed_run_record(folder: str | Path, wall_seconds: float, mode: str, card: str) -> dict[str, Any]:
    """What the timed run in `folder` measured, against the target; `card` names the device.

    The best epoch and its metrics are the ones `fit` kept (best.pt); the times come from the history.
    """
    run = RunFolder(folder)
    if not run.history.exists() or not run.best.exists():
        raise ConfigError(f"no history or best.pt in {folder}: the run did not get far enough to write them")
    history = pd.read_csv(run.history)
    best = read_checkpoint(run.best)["best"]
    settings = json.loads(run.run.read_text()) if run.run.exists() else {}
    seconds = history["seconds"]
    record = {
        "card": card, "mode": mode, "epochs": int(history["epoch"].max()),
        "eval_every": settings.get("train", {}).get("eval_every"),
        "wall_seconds": round(float(wall_seconds), 1),
        "train_loop_seconds": round(float(history["elapsed"].iloc[-1]), 1),
        "first_epoch_seconds": round(float(seconds.iloc[0]), 3),
        "median_epoch_seconds_after_first": round(float(seconds.iloc[1:].median()), 4) if len(seconds) > 1 else None,
        "eval_seconds_total": round(float(history["eval_seconds"].sum()), 1),
        "evaluations": int(history[SELECTION_METRIC].notna().sum()),
        "best_epoch": int(best["epoch"]),
        "valid_sampled_ndcg@10": float(best[SELECTION_METRIC]),
        "test_sampled_ndcg@10": float(best["test_ndcg@10"]),
        "test_sampled_hr@10": float(best["test_hr@10"]),
        "target": {"wall_seconds_at_most": TARGET_WALL_SECONDS, "test_sampled_ndcg@10_at_least": TARGET_TEST_NDCG},
        "torch": torch.__version__, "date": timestamp(),
        "settings": settings,
    }
    record["met"] = target_met(record["wall_seconds"], record["test_sampled_ndcg@10"])
    return record


def main(argv: list[str] | None = None) -> int:
    """Write the record of one timed run as JSON and print its headline."""
    parser = argparse.ArgumentParser(prog="python -m helpers.studies.timed_run", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="the timed run's folder (history.csv, run.json)")
    parser.add_argument("--wall", type=float, required=True, help="wall seconds of the whole process")
    parser.add_argument("--mode", required=True, help="compile mode the run used (off, default, reduce-overhead)")
    parser.add_argument("--device", default=None, help="the device that ran it (default: best available here)")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    record = timed_run_record(args.folder, args.wall, args.mode, device_description(get_device(args.device)))
    write_json(Path(args.out), record)
    print(f"{record['card']}, compile {record['mode']}: {record['epochs']} epochs in {record['wall_seconds']} s wall "
          f"({record['train_loop_seconds']} s training loop), test sampled NDCG@10 "
          f"{record['test_sampled_ndcg@10']:.4f}; target met: {record['met']}")
    return 0


if __name__ == "__main__":
    run_cli(main)
