"""What the notebooks share: the setup after the Colab cell, smoke and export modes, where outputs go (Drive or
`runs/`), figures, run records with their cost, and exported artifacts."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from helpers.checkpoint import read_checkpoint, save_checkpoint
from helpers.data import Split
from helpers.evaluate import Scorer
from helpers.machine import machine_line
from helpers.notebook.outputs import PAPER_EPOCHS, RunShown, run_line, tail_epochs
from helpers.recommend import recommend
from helpers.runs import RunFolder
from helpers.settings import TrainConfig
from helpers.train import SELECTION_METRIC, FitResult
from helpers.utils import COLAB_DRIVE, REPO_ROOT, atomic_write, device_description, relative

ROOT = REPO_ROOT
ARTIFACTS = ROOT / "artifacts"
# The notebooks' Colab cell clones this before any code of ours exists, so each carries a copy of it;
# tests/test_notebooks.py keeps every copy (cells and Colab badges) equal to this one.
REPO_URL = "https://github.com/ssept-pytorch/ssept-pytorch.git"
SMOKE_ENV = "SSEPT_SMOKE"
EXPORT_ENV = "SSEPT_EXPORT"
QUICK_ENV = "SSEPT_QUICK"
DRIVE = COLAB_DRIVE
DRIVE_FOLDER = "ssept-runs"  # on Drive: run folders, studies, results and figures


def smoke_mode() -> bool:
    """True when `SSEPT_SMOKE=1`: notebooks shrink epochs and users to run in about a minute."""
    return os.environ.get(SMOKE_ENV, "") == "1"


def export_mode() -> bool:
    """True when `SSEPT_EXPORT=1`: notebooks also update the published `artifacts/` (never in smoke mode)."""
    return os.environ.get(EXPORT_ENV, "") == "1" and not smoke_mode()


def quick_mode() -> bool:
    """True when `SSEPT_QUICK=1`: a notebook's visible quick setting (fewer epochs, one seed) is on."""
    return os.environ.get(QUICK_ENV, "") == "1"


def outputs_dir() -> Path:
    """Where a notebook's own outputs go: Google Drive when mounted (survives a lost runtime), else `runs/`;
    `runs/smoke` in smoke mode."""
    if smoke_mode():
        return ROOT / "runs" / "smoke"
    return DRIVE / DRIVE_FOLDER if DRIVE.exists() else ROOT / "runs"


def run_dir(name: str) -> Path:
    """The folder of one training run or study, under `outputs_dir()`."""
    return outputs_dir() / name


@dataclass(frozen=True)
class Session:
    """What a notebook learns at its start: when it started and in which modes it runs."""

    started: float
    smoke: bool
    export: bool
    quick: bool
    outputs: Path

    def describe(self) -> str:
        """One line for the notebook's output: where results go, and whether `artifacts/` is updated."""
        where = ("Google Drive" if self.outputs.is_relative_to(DRIVE)
                 else "local disk: in Colab, lost with the runtime")
        return (f"outputs go to {relative(self.outputs)} ({where}); "
                + ("artifacts/ is updated (SSEPT_EXPORT=1)" if self.export else "artifacts/ is left as committed")
                + ("; smoke mode (SSEPT_SMOKE=1): tiny settings" if self.smoke else "")
                + ("; quick setting on (SSEPT_QUICK=1)" if self.quick else ""))


def setup() -> Session:
    """The one call after the Colab cell: read the modes, make the outputs folder, say where things go."""
    session = Session(time.time(), smoke_mode(), export_mode(), quick_mode(), outputs_dir())
    session.outputs.mkdir(parents=True, exist_ok=True)
    print(session.describe())
    return session


def save_figure(fig: Any, name: str, export: bool = False) -> list[str]:
    """Save a figure under the outputs folder (on Drive when mounted), and in `artifacts/figures/` (the
    README's) when `export`; return the paths written, relative to the repository where they are in it."""
    targets = [outputs_dir() / "figures" / name] + ([ARTIFACTS / "figures" / name] if export else [])
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(target, dpi=110, bbox_inches="tight")
    return [relative(t) for t in targets]


def machine() -> str:
    """The CPU model and core count (short enough that a table shows it whole): `helpers.machine.machine_line`."""
    return machine_line()


def gpu() -> str:
    """The GPU's name, or "none"."""
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "none"


def run_shown(name: str, history: pd.DataFrame, cap: int, stop: str, budget: str | None = None) -> RunShown:
    """What the run record says about one run (`outputs.RunShown`), from its history (one row per epoch, the
    validation metric where it was evaluated), its epoch cap and why it stopped ("patience" or "budget").

    `budget` (for a run the budget stopped): "quick" for the notebook's quick setting, "paper" for the paper's
    fixed budget, None otherwise. The tail gain is what the last `outputs.tail_epochs` epochs added to the best
    validation NDCG@10 (None when no evaluation came before them).
    """
    if stop not in ("patience", "budget"):
        raise ValueError(f"stop must be 'patience' or 'budget', got {stop!r}")
    if budget not in (None, "quick", "paper"):
        raise ValueError(f"budget must be None, 'quick' or 'paper', got {budget!r}")
    if budget == "paper" and cap != PAPER_EPOCHS:
        raise ValueError(f"{name}: a cap of {cap} epochs is not the paper's fixed budget ({PAPER_EPOCHS})")
    evaluated = history.dropna(subset=[SELECTION_METRIC])
    epochs = int(history["epoch"].max())
    best = evaluated.loc[evaluated[SELECTION_METRIC].idxmax()]  # the first of equal values, as `fit` keeps it
    tail = tail_epochs(epochs)
    before = evaluated[evaluated["epoch"] <= epochs - tail][SELECTION_METRIC]
    gain = float(evaluated[SELECTION_METRIC].max() - before.max()) if len(before) else None
    return RunShown(name, epochs, int(cap), int(best["epoch"]), stop, budget, tail, gain)


def run_shown_from_fit(name: str, result: FitResult, config: TrainConfig, budget: str | None = None) -> RunShown:
    """`run_shown` for a run `fit` returned, trained with `config`: patience or the budget, as `fit` says."""
    stop = "patience" if result.stop_reason == "patience" else "budget"
    shown = run_shown(name, result.history, config.epochs, stop, budget)
    if shown.best_epoch != int(result.best["epoch"]):
        raise ValueError(f"{name}: best epoch {shown.best_epoch} from the history, {result.best['epoch']} from fit")
    return shown


def run_record(
    params: dict[str, Any], started: float, device: torch.device | str, train_seconds: float | None = None,
    runs: list[RunShown | str] | None = None, trained_on: str | None = None,
) -> pd.DataFrame:
    """A small table saying which machine ran the notebook, how long it took, with which parameters.

    `train_seconds` is the training time of the runs the notebook shows, which differs from the wall time
    of this execution when finished runs were only reloaded (or when it includes evaluation and plots).
    `runs` are the runs the notebook shows (`run_shown`), or lines for groups of them (`outputs.runs_line`):
    printed one per line, each with its epochs, best epoch and why it stopped, which the committed-notebook
    check reads (`outputs.budget_problem`). `trained_on` names the devices that trained those runs, as their
    histories record them, when that is not this execution's `device` (e.g. runs trained earlier and reloaded).
    """
    if runs:
        print("Runs shown:", *(r if isinstance(r, str) else run_line(r) for r in runs), sep="\n")
    rows = {"machine": machine(), "GPU": gpu(), "device": device_description(torch.device(device)),
            "torch": torch.__version__, "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "wall time of this execution (min)": round((time.time() - started) / 60, 1)}
    if trained_on is not None:
        rows["runs trained on"] = trained_on
    if train_seconds is not None:
        rows["training time of the runs shown (min)"] = round(train_seconds / 60, 1)
    rows["smoke mode"] = smoke_mode()
    rows.update({f"param {k}": v for k, v in params.items()})
    return pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=list(rows))


def export_run(
    run: Path, name: str, record: dict[str, Any], dest: Path = ARTIFACTS, weights_file: str | None = None
) -> dict[str, Any]:
    """Copy a finished run's history (and best weights) into `dest`; record it in `ml1m_results.json`.

    Reads the run folder's `run.json`, `history.csv` and `best.pt` (not `last.pt`, which
    may be left behind). The weights go to `dest / weights_file` without optimiser state
    (small enough to commit); the record gains the best epoch, its metrics, the settings,
    the wall time and whatever `record` holds (command, machine, ...); the device is the one the history
    names for its epochs (each distinct one, in order) when it names one for every epoch, else `record`'s.
    """
    folder = RunFolder(run)
    best = read_checkpoint(folder.best)
    settings = json.loads(folder.run.read_text())
    history = pd.read_csv(folder.history)
    dest.mkdir(parents=True, exist_ok=True)
    if weights_file:
        save_checkpoint(dest / weights_file, {k: v for k, v in best.items() if k != "format"})
    shutil.copyfile(folder.history, dest / f"ml1m_history_{name}.csv")
    entry = {**record, "epochs": int(history["epoch"].iloc[-1]), "seed": int(settings["train"]["seed"]),
             "train": settings["train"], "model": settings["model"], "best": best["best"],
             "weights": weights_file, "train_seconds": float(history["seconds"].sum()),
             "wall_seconds": float(history["elapsed"].iloc[-1])}
    if "device" in history and history["device"].notna().all():  # where the epochs ran (histories since 2026-11-29)
        entry["device"] = "; ".join(dict.fromkeys(history["device"]))
    results_path = dest / "ml1m_results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results[name] = entry
    text = json.dumps(results, indent=2, sort_keys=True, default=str)
    atomic_write(results_path, lambda f: f.write(text.encode()))
    return entry


def copy_to_drive(path: Path, folder: str = "artifacts") -> Path | None:
    """Copy a file into the outputs folder on Google Drive when it is mounted; return the copy's path."""
    if not DRIVE.exists():
        return None
    target = DRIVE / DRIVE_FOLDER / folder / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
    return target


def history_and_recommendations(
    model: Scorer, split: Split, user: int, titles: dict[int, str], k: int = 10
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The user's last k inputs (test time) and the top-k recommendations, with titles."""
    hist = split.data.user_items(user)[: split.history_len("test")[user]]
    target = int(split.targets("test")[user])
    last = pd.DataFrame({"item": hist[-k:], "title": [titles.get(int(i), "?") for i in hist[-k:]]},
                        index=pd.RangeIndex(len(hist) - min(k, len(hist)) + 1, len(hist) + 1, name="position"))
    items, scores = recommend(model, hist, user=user, k=k)
    recs = pd.DataFrame({"item": items, "title": [titles.get(int(i), "?") for i in items],
                         "score": np.round(scores, 3), "held-out test item": items == target},
                        index=pd.RangeIndex(1, len(items) + 1, name="rank"))
    return last, recs


def pretrained_encoders(committed: dict[str, Path], fresh: dict[str, Path]) -> tuple[dict[str, Path], list[str]]:
    """Per family, the encoder notebook 02 just trained (`fresh`, its best.pt) when it exists, else the
    committed one; and one line per family saying which was chosen, for the notebook's output."""
    chosen, lines = {}, []
    for family, path in committed.items():
        new = fresh.get(family)
        if new is not None and Path(new).exists():
            chosen[family] = Path(new)
            lines.append(f"{family}: the encoder notebook 02 trained in this environment ({relative(new)})")
        else:
            chosen[family] = Path(path)
            lines.append(f"{family}: the committed encoder {relative(path)}")
    return chosen, lines
