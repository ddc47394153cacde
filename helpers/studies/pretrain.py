"""Notebook 02's study: SSE-PT and SASRec (as published: no SSE) trained on ML-1M with one budget over seeds.

Both are built from `helpers.settings` under the `reference` recipe (the reference code's dropouts), so the two
models differ only in the user part and SSE. This module holds the runs, what they will cost before they start,
the summary over seeds and the count of seeds SSE-PT wins, and the command line equivalent of each run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from helpers import settings
from helpers.notebook.results import load_results
from helpers.notebook.session import ARTIFACTS, copy_to_drive, export_run, machine
from helpers.runs import RunFolder
from helpers.settings import SSEPTConfig, TrainConfig

#: Display label -> preset family: SSE-PT, and SASRec as published (no SSE).
MODELS = {"SSE-PT": "ssept", "SASRec": "sasrec"}
#: The recipe both models train under (helpers.settings.RECIPES).
RECIPE = "reference"
#: The group its runs are recorded under in `ml1m_results.json` (with the device type after it).
GROUP = "reference code's setting"
#: The CPU benchmark the cost note reads first: `helpers.studies.bench`, alone on an idle machine.
CPU_BENCH = "bench_cpu_idle.json"


@dataclass(frozen=True)
class PlannedRun:
    """One training run of the study: which model, which seed, its settings and its folder."""

    label: str
    seed: int
    model: SSEPTConfig
    train: TrainConfig
    folder: Path

    @property
    def family(self) -> str:
        return MODELS[self.label]

    @property
    def name(self) -> str:
        """Row label in the notebook's tables, e.g. "SSE-PT s0"."""
        return f"{self.label} s{self.seed}"

    @property
    def record(self) -> str:
        """The run's name in `ml1m_results.json` on a device type, without it: e.g. "ssept_reference"."""
        return f"{self.family}_{RECIPE}"

    def command(self, dataset: str = "ml-1m") -> str:
        """The `python -m helpers.train` line that trains the same run into `runs/`."""
        t = self.train
        flags = {"--dataset": dataset, "--model": self.family, "--recipe": RECIPE, "--epochs": t.epochs,
                 "--eval-every": t.eval_every, "--item-dim": self.model.item_dim, "--maxlen": self.model.maxlen,
                 "--p-item": t.p_item, "--p-sub": t.p_sub, "--bucket": t.bucket, "--chunks": t.chunks, "--seed": t.seed,
                 "--out": f"runs/{self.folder.name}"}
        if self.family == "ssept":
            flags |= {"--user-dim": self.model.user_dim, "--p-user": t.p_user}
        return "python -m helpers.train " + " ".join(f"{k} {v}" for k, v in flags.items()) + " --resume"


def plan(
    n_users: int, n_items: int, seeds: tuple[int, ...], folder_of: Callable[[str], Path], *,
    item_dim: int, user_dim: int, maxlen: int, p_user: float, p_item: float, **train: Any,
) -> list[PlannedRun]:
    """SSE-PT and SASRec for every seed under `RECIPE`, with the notebook's widths, window and SSE-PT's SSE
    probabilities (SASRec has no user part and, as published, no SSE). `train` holds the other training
    settings (epochs, eval_every, p_sub, bucket, chunks); `folder_of("ml1m-ssept-reference-s0")` gives a run's
    folder."""
    runs = []
    for seed in seeds:
        for label, family in MODELS.items():
            own = {"user_dim": user_dim} if family == "ssept" else {}
            model = settings.model_config(family, n_users, n_items, RECIPE, item_dim=item_dim, maxlen=maxlen,
                                         **own)
            sse = {"p_user": p_user, "p_item": p_item} if family == "ssept" else {}
            config = settings.train_config(family, RECIPE, seed=seed, **train, **sse)
            runs.append(PlannedRun(label, seed, model, config, folder_of(f"ml1m-{family}-{RECIPE}-s{seed}")))
    return runs


def epochs_done(folder: Path) -> int:
    """Epochs a run folder has already trained (0 for a new one)."""
    history = RunFolder(folder).history
    return len(pd.read_csv(history)) if history.exists() else 0


def committed_epoch_seconds(results: dict[str, dict[str, Any]], device_type: str) -> dict[str, tuple[float, str]]:
    """Training seconds per epoch of the committed runs of notebook 02's `GROUP` on a device type ("cpu" or
    "cuda"), per family (the mean over seeds), with the machine that measured them."""
    found: dict[str, list[float]] = {}
    machines: dict[str, str] = {}
    for record in results.values():
        if not record.get("group", "").startswith(GROUP) or not record["device"].startswith(device_type):
            continue
        family = "ssept" if record["model"]["user_dim"] else "sasrec"
        found.setdefault(family, []).append(record["train_seconds"] / record["epochs"])
        machines[family] = record.get("machine", record["device"])
    return {family: (sum(v) / len(v), machines[family]) for family, v in found.items()}


def bench_layout(bucket: int, chunks: int) -> str:
    """The benchmark's name (`helpers.studies.bench`) for a run's batch layout: bucketN, plain or chunksN
    (chunks 0 is the CPU's automatic 4)."""
    if bucket:
        return f"bucket{bucket}"
    return "plain" if chunks == 1 else f"chunks{chunks or 4}"


def benchmarked_epoch_seconds(bench: dict[str, Any], layout: str) -> dict[str, tuple[float, str]]:
    """Training seconds per epoch per family for one batch layout, from a `helpers.studies.bench` record,
    with the machine and date that measured them (empty when the record did not time that layout)."""
    machine = bench["machine"]
    where = f"{machine['processor']}, {machine['device']}, benchmarked {bench['date'][:10]}"
    return {name.split("_", 1)[0]: (float(row["epoch_seconds"]), where) for name, row in bench["runs"].items()
            if name.split("_", 1)[1] == layout}


def expected_cpu_epoch_seconds(artifacts: Path, layout: str) -> dict[str, tuple[float, str]]:
    """Seconds per CPU training epoch per family for a batch layout: the idle-machine benchmark (`CPU_BENCH`)
    where it timed that layout for both families, else the committed CPU runs' of `GROUP` (`ml1m_results.json`:
    the seconds their epochs took, which may have shared the machine)."""
    bench = Path(artifacts) / CPU_BENCH
    if bench.exists():
        timed = benchmarked_epoch_seconds(json.loads(bench.read_text()), layout)
        if set(timed) == set(MODELS.values()):
            return timed
    return committed_epoch_seconds(load_results(Path(artifacts) / "ml1m_results.json"), "cpu")


def cost_note(runs: list[PlannedRun], per_epoch: dict[str, tuple[float, str]]) -> str:
    """What training `runs` will cost, from the epochs left and `per_epoch` (family -> seconds per epoch and
    the machine that measured them: `expected_cpu_epoch_seconds`, `committed_epoch_seconds`)."""
    left = {run.name: max(run.train.epochs - epochs_done(run.folder), 0) for run in runs}
    if not any(left.values()):
        return f"all {len(runs)} runs are finished: they are only reloaded"
    seconds = sum(left[run.name] * per_epoch[run.family][0] for run in runs)
    rates = ", ".join(f"{per_epoch[f][0]:.1f} s per {label} epoch" for label, f in MODELS.items() if f in per_epoch)
    machine = next(iter(per_epoch.values()))[1]
    return (f"about to train {sum(left.values())} epochs over {sum(1 for v in left.values() if v)} runs: about "
            f"{seconds / 3600:.1f} h of training at {rates} ({machine})")


def seed_summary(table: pd.DataFrame, runs: list[PlannedRun]) -> pd.DataFrame:
    """Mean, min and max over seeds of every column of `table` (rows named like `PlannedRun.name`), per model."""
    trained = table.loc[[run.name for run in runs]]
    by_model = trained.groupby([run.label for run in runs], sort=False)
    return pd.concat({"mean": by_model.mean(), "min": by_model.min(), "max": by_model.max()}, axis=1)


def wins(
    table: pd.DataFrame, seeds: tuple[int, ...], column: Any, better: str = "SSE-PT", worse: str = "SASRec"
) -> int:
    """On how many seeds `better` scores strictly above `worse` in `column` of `table`."""
    return sum(table.loc[f"{better} s{s}", column] > table.loc[f"{worse} s{s}", column] for s in seeds)


def export(runs: list[PlannedRun], table: pd.DataFrame, devices: dict[str, str], device: torch.device) -> list[str]:
    """Record every run in `artifacts/ml1m_results.json` with its history and command, and the first seed's
    best weights as `artifacts/ml1m_FAMILY_RECIPE_DEVICE.pt` (copied to Drive when mounted); one line per run.

    `table` is the notebook's comparison (rows `PlannedRun.name`, columns (protocol, metric)); `devices`
    names the device each run trained on.
    """
    lines = []
    for run in runs:
        full = table.loc[run.name, "full"]
        group = f"{GROUP}, {device.type.upper()}" + (f" (bucket {run.train.bucket})" if run.train.bucket else "")
        record = {"command": run.command(), "device": devices[run.name], "machine": machine(), "group": group,
                  "full_test": {k: float(full[k]) for k in ("ndcg@10", "hr@10", "mrr")}}
        weights = f"ml1m_{run.record}_{device.type}.pt" if run.seed == runs[0].seed else None
        entry = export_run(run.folder, f"{run.record}_{device.type}_s{run.seed}", record, weights_file=weights)
        saved = copy_to_drive(ARTIFACTS / weights) if weights else None
        lines.append(f"{run.name}: best epoch {entry['best']['epoch']}, test NDCG@10 "
                     f"{entry['best']['test_ndcg@10']:.4f}" + (" (weights also on Drive)" if saved else ""))
    return lines


def per_run_table(results: dict[str, Any]) -> pd.DataFrame:
    """One row per run of `fit` results (`FitResult` by run name): the epoch validation picked with its
    validation and test NDCG@10 and HR@10 (sampled protocol), the epochs trained, the median seconds a training
    epoch took and where the epochs ran (as the run's history records them, whichever session trained them)."""
    rows = {}
    for name, result in results.items():
        history, best = result.history, result.best
        where = history["device"].dropna() if "device" in history else pd.Series(dtype=str)
        rows[name] = {"best epoch": int(best["epoch"]), "valid NDCG@10": best["valid_ndcg@10"],
                      "test NDCG@10": best["test_ndcg@10"], "test HR@10": best["test_hr@10"],
                      "epochs trained": len(history), "median epoch (s)": round(float(history["seconds"].median()), 1),
                      "trained on": "; ".join(dict.fromkeys(where)) or "not recorded"}
    return pd.DataFrame(rows).T.rename_axis("run")


def training_devices(results: dict[str, Any]) -> str:
    """Every device the runs' epochs were trained on, as their histories name them, in order of first use."""
    seen = [d for r in results.values() if "device" in r.history for d in r.history["device"].dropna()]
    return "; ".join(dict.fromkeys(seen)) or "not recorded"


def summary(table: pd.DataFrame, runs: list[PlannedRun], seeds: tuple[int, ...]) -> list[str]:
    """The notebook's conclusion in lines: per protocol, each model's mean test NDCG@10 and HR@10 over the seeds
    and on how many seeds SSE-PT is ahead (`table` as `helpers.evaluate.compare` gives it)."""
    means = seed_summary(table, runs)["mean"]
    lines = []
    for protocol in ("sampled", "full"):
        parts = ", ".join(f"{label} {means.loc[label, (protocol, 'ndcg@10')]:.4f} / "
                          f"{means.loc[label, (protocol, 'hr@10')]:.4f}" for label in MODELS)
        won = wins(table, seeds, (protocol, "ndcg@10"))
        lines.append(f"{protocol} protocol, test NDCG@10 / HR@10 (mean of {len(seeds)} seeds): {parts}; "
                     f"SSE-PT ahead on {won} of {len(seeds)} seeds")
    return lines
