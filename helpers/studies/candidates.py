"""The best-run candidates of a GPU session, as one record: `python -m helpers.studies.candidates FOLDER... --card C
--out FILE.json --histories FILE.csv`.

`scripts/gpu_speed.sh` trains several candidate settings in parallel until its deadline and rescores each best
checkpoint with full ranking (`full_test.json` in the run folder). This collects, per run: its settings (what
differs from the faithful recipe), the epochs it reached, the epoch validation picked with its sampled metrics,
the full-ranking test metrics of that checkpoint, and whether it meets the quality target (`QUALITY_TARGET`); the
histories go into one long CSV (a `run` column), so the curves can be drawn without the run folders.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from helpers.checkpoint import read_checkpoint
from helpers.errors import ConfigError
from helpers.runs import RunFolder, flatten
from helpers.settings import model_config, train_config
from helpers.utils import atomic_write, run_cli

#: The quality target (one run, epoch picked by validation): sampled NDCG@10 and HR@10, full NDCG@10 and HR@10.
QUALITY_TARGET = {"sampled_ndcg@10": 0.64, "sampled_hr@10": 0.84, "full_ndcg@10": 0.21, "full_hr@10": 0.36}
#: Settings that do not change what a run learns, left out of `differs_from_faithful`.
EXECUTION = ("train.compile", "train.checkpoint_every", "train.eval_every", "train.epochs", "train.seed",
             "train.chunks", "train.bucket", "train.amp", "model.n_users", "model.n_items")


def differs_from_faithful(settings: dict[str, Any]) -> dict[str, Any]:
    """The run's settings (a run.json) that differ from faithful SSE-PT's on the same dataset, as `key: value`;
    settings of execution alone (`EXECUTION`) are left out."""
    model = settings["model"]
    faithful = {"model": asdict(model_config("ssept", model["n_users"], model["n_items"])),
                "train": asdict(train_config("ssept"))}
    ours, theirs = flatten({k: settings[k] for k in ("model", "train")}), flatten(faithful)
    return {k: v for k, v in sorted(ours.items()) if k not in EXECUTION and theirs.get(k, v) != v}


def meets(record: dict[str, float | None]) -> bool:
    """Every half of the quality target at once; a metric that is missing or None (no full_test.json, or an
    empty one from a timed-out evaluation) does not meet it."""
    return all((got := record.get(k)) is not None and got >= v for k, v in QUALITY_TARGET.items())


def candidate_record(folder: str | Path) -> dict[str, Any]:
    """One candidate's record from its folder (run.json, history.csv, best.pt, full_test.json)."""
    run = RunFolder(folder)
    if not (run.run.exists() and run.history.exists() and run.best.exists()):
        raise ConfigError(f"{folder} lacks run.json, history.csv or best.pt: the run did not get far enough")
    settings = json.loads(run.run.read_text())
    history = pd.read_csv(run.history)
    best = read_checkpoint(run.best)["best"]
    full_path = Path(folder) / "full_test.json"
    full = json.loads(full_path.read_text()) if full_path.exists() and full_path.stat().st_size else {}
    record = {
        "run": Path(folder).name, "seed": settings["train"]["seed"], "loss": settings["train"]["loss"],
        "differs_from_faithful": differs_from_faithful(settings),
        "epochs_reached": int(history["epoch"].max()), "best_epoch": int(best["epoch"]),
        "valid_sampled_ndcg@10": float(best["valid_ndcg@10"]),
        "sampled_ndcg@10": float(best["test_ndcg@10"]), "sampled_hr@10": float(best["test_hr@10"]),
        "full_ndcg@10": full.get("ndcg@10"), "full_hr@10": full.get("hr@10"),
        "train_seconds": round(float(history["seconds"].sum()), 1), "settings": settings,
    }
    record["meets_target"] = meets(record)
    return record


def main(argv: list[str] | None = None) -> int:
    """Write the candidates' records (JSON) and their histories (one CSV), and print a table."""
    parser = argparse.ArgumentParser(prog="python -m helpers.studies.candidates", description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="the candidates' run folders")
    parser.add_argument("--card", required=True, help="the device that trained them, e.g. 'NVIDIA H200'")
    parser.add_argument("--note", default="", help="how they were run (sharing, deadline, ...)")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--histories", required=True, help="CSV file for the histories (a 'run' column)")
    args = parser.parse_args(argv)
    records = [candidate_record(f) for f in args.folders]
    histories = pd.concat([pd.read_csv(RunFolder(f).history).assign(run=Path(f).name) for f in args.folders])
    text = json.dumps({"card": args.card, "note": args.note, "target": QUALITY_TARGET,
                       "date": time.strftime("%Y-%m-%d"), "runs": records}, indent=2, default=str)
    atomic_write(Path(args.out), lambda f: f.write(text.encode()))
    histories.to_csv(args.histories, index=False)
    columns = ["run", "epochs_reached", "best_epoch", "valid_sampled_ndcg@10", "sampled_ndcg@10", "sampled_hr@10",
               "full_ndcg@10", "full_hr@10", "meets_target"]
    print(pd.DataFrame(records)[columns].sort_values("valid_sampled_ndcg@10", ascending=False).to_string(index=False))
    return 0


if __name__ == "__main__":
    run_cli(main)
