"""What a search costs and gives on ML-1M with a small budget: `python -m helpers.studies.tuning` writes
`artifacts/tune_ml1m_small.json` and the trials of each study beside it.

Three measurements, one after the other on an otherwise idle machine:
- a study (`Budget`: SSE-PT's default space, 6 trials capped at 20 epochs) run by one `python -m helpers.tune`
  worker, and then the same study afresh by two workers started at once against one SQLite file, each worker with
  one torch thread: trials per hour, and whether the best value differs;
- the defaults (`python -m helpers.train --model ssept`, the `defaults` recipe) trained under the same cap,
  validation interval and patience as a trial, with torch's threads: what the search gained over not searching at
  this budget.
Each best trial is tested once, at the end of its study, as `helpers.tune` always does; the defaults' test numbers
come from the same evaluation (`helpers.tune.test_metrics` on their best checkpoint).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from helpers.data import leave_one_out, load
from helpers.machine import machine, machine_line
from helpers.settings import SAMPLED_NEGATIVES, train_config
from helpers.studies.records import busy_processes, load_average, timestamp
from helpers.tune import test_metrics
from helpers.utils import REPO_ROOT, relative, run_cli, write_json

ARTIFACTS = REPO_ROOT / "artifacts"


@dataclass(frozen=True)
class Budget:
    """The data, the family and what each trial may spend; the defaults are the committed measurement's."""

    dataset: str = "ml-1m"
    model: str = "ssept"
    trials: int = 6  # per study
    epochs: int = 20  # each trial's cap, and the defaults' epochs
    eval_every: int = 5
    patience: int = 0  # 0: every trial runs to its cap unless pruned
    prune_warmup: int = 10  # epochs before which the median pruner stops nothing
    eval_negatives: int = SAMPLED_NEGATIVES  # of the sampled protocol, for the objective and every test
    space: str = ""  # a JSON file overriding the family's default space ("": the default space)

    def tune_args(self) -> list[str]:
        """The `helpers.tune` flags of this budget."""
        return ["--dataset", self.dataset, "--model", self.model, "--trials", str(self.trials), "--epochs",
                str(self.epochs), "--eval-every", str(self.eval_every), "--patience", str(self.patience),
                "--prune-warmup", str(self.prune_warmup), "--eval-negatives", str(self.eval_negatives),
                *(["--space", self.space] if self.space else [])]


def _stamp() -> dict[str, Any]:
    return {"date": timestamp(), "load_average": load_average()}


def _shown(words: list[str]) -> str:
    """A command as a user would type it: `python`, and paths relative to the repository."""
    return " ".join(["python", *words[1:]]).replace(str(REPO_ROOT) + "/", "")


def run_workers(budget: Budget, workers: int, out: Path, trials_csv: Path) -> dict[str, Any]:
    """One study run by `workers` processes started at once (one torch thread each), then one relaunch that
    trains nothing and writes the study's outputs with its best trial's test metrics."""
    command = [sys.executable, "-m", "helpers.tune", *budget.tune_args(), "--study", f"workers-{workers}", "--out",
               str(out), "--threads", "1", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    before, busy = _stamp(), busy_processes()
    t0 = time.perf_counter()
    procs = [subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for _ in range(workers)]
    errors = [p.communicate()[1] for p in procs]
    wall = time.perf_counter() - t0
    failed = [e for e, p in zip(errors, procs, strict=True) if p.returncode]
    if failed:
        raise RuntimeError(f"a worker failed: {failed[0].strip()[-500:]}")
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True)
    best = json.loads(done.stdout.strip().splitlines()[-1])["best"]
    best["folder"] = relative(best["folder"])
    table = pd.read_csv(out / "trials.csv")
    table.to_csv(trials_csv, index=False)
    pruned = table[table["state"] == "pruned"]
    return {"workers": workers, "torch_threads_per_worker": 1, "command": _shown(command),
            "measured": {"before": before, "busy_before": busy, "after": _stamp()},
            "wall_seconds": round(wall, 1), "trials": int(len(table)),
            "trials_per_hour": round(len(table) / wall * 3600, 2),
            "epochs_trained": int(table["epochs"].sum()), "trial_seconds": round(float(table["seconds"].sum()), 1),
            "states": {str(k): int(v) for k, v in table["state"].value_counts().items()},
            "pruned_epochs_left": int((budget.epochs - pruned["epochs"]).sum()),
            "trials_csv": trials_csv.name, "best": best}


def run_defaults(budget: Budget, out: Path) -> dict[str, Any]:
    """The family's defaults under a trial's budget (torch's threads), tested as a study tests its best trial."""
    command = [sys.executable, "-m", "helpers.train", "--dataset", budget.dataset, "--model", budget.model,
               "--epochs", str(budget.epochs), "--eval-every", str(budget.eval_every), "--patience",
               str(budget.patience), "--eval-negatives", str(budget.eval_negatives), "--out", str(out), "--overwrite",
               "--quiet"]
    before, busy = _stamp(), busy_processes()
    t0 = time.perf_counter()
    subprocess.run(command, cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    history = pd.read_csv(out / "history.csv")
    evaluated = history[history["valid_ndcg@10"].notna()]
    best = evaluated.loc[evaluated["valid_ndcg@10"].idxmax()]
    split = leave_one_out(load(budget.dataset))
    return {"command": _shown(command), "measured": {"before": before, "busy_before": busy, "after": _stamp()},
            "torch_threads": torch.get_num_threads(), "wall_seconds": round(wall, 1),
            "best_epoch": int(best["epoch"]), "valid_ndcg@10": float(best["valid_ndcg@10"]),
            "test": test_metrics(out / "best.pt", split, replace(train_config(budget.model, "defaults"),
                                                                 eval_negatives=budget.eval_negatives))}


def measure(budget: Budget, out: Path, work: Path, log: Callable[[str], None] = print,
            layouts: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """A study for each count of workers in `layouts`, then the defaults; the record is rewritten after each, so
    a kill keeps what was measured, and a record of the same budget keeps its studies of other worker counts."""
    record: dict[str, Any] = {"command": "python -m helpers.studies.tuning", "machine": machine(),
                              "machine_line": machine_line(), "budget": asdict(budget), "pruner": "median",
                              "studies": []}
    if out.exists() and json.loads(out.read_text()).get("budget") == record["budget"]:
        record["studies"] = [s for s in json.loads(out.read_text())["studies"] if s["workers"] not in layouts]
    work.mkdir(parents=True, exist_ok=True)
    for workers in layouts:
        trials_csv = out.with_name(f"{out.stem}_workers{workers}_trials.csv")
        measured = run_workers(budget, workers, work / f"workers-{workers}", trials_csv)
        log(json.dumps(measured))
        record["studies"] = sorted([*record["studies"], measured], key=lambda study: study["workers"])
        write_json(out, record)
    record["defaults"] = run_defaults(budget, work / "defaults")
    log(json.dumps(record["defaults"]))
    write_json(out, record)
    return record


def main(argv: list[str] | None = None) -> int:
    """Run the two studies and the defaults, and write the record."""
    parser = argparse.ArgumentParser(prog="python -m helpers.studies.tuning", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ARTIFACTS / "tune_ml1m_small.json", help="the record")
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "runs" / "tune-ml1m", help="the studies' folders")
    parser.add_argument("--workers", default="1,2", help="the worker counts to measure, comma-separated")
    for f in fields(Budget):
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default,
                            help=f"default: {f.default}")
    args = vars(parser.parse_args(argv))
    out, work = args.pop("out"), args.pop("work")
    layouts = tuple(int(w) for w in args.pop("workers").split(","))
    measure(Budget(**args), out, work, layouts=layouts)
    print(f"wrote {relative(out)}")
    return 0


if __name__ == "__main__":
    run_cli(main)
