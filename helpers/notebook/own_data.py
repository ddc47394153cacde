"""What notebook 05 (your own data) shows beyond training: how long the histories are against a window, a
pretrained checkpoint cut to a shorter window, what each run cost, and what training and a search will do before
they run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from helpers.checkpoint import read_checkpoint, save_checkpoint
from helpers.data import Split
from helpers.resume import stop_reason
from helpers.settings import TrainConfig
from helpers.train import SELECTION_METRIC, FitResult


def history_windows(split: Split, windows: tuple[int, ...] = (50, 100, 200)) -> pd.DataFrame:
    """For each window length: the share of training users whose whole training history fits in it, and the
    share of all training positions (next-item targets) one epoch trains on with it (the last `window` of each
    history; `helpers.sampler` takes the most recent window when a history is longer)."""
    lengths = split.train_len[split.train_len >= 2].astype(np.int64)  # users that train
    targets = lengths - 1  # a history of n items gives n - 1 next-item targets
    rows = {w: {"users whose history fits": float((lengths <= w + 1).mean()),
                "training positions per epoch": float(np.minimum(targets, w).sum() / targets.sum())}
            for w in windows}
    frame = pd.DataFrame(rows).T.rename_axis("window")
    return frame


def window_checkpoint(source: str | Path, maxlen: int, out: str | Path) -> Path:
    """`source` with its position table cut to its last `maxlen` rows, written to `out`: the same encoder for
    windows of at most `maxlen` items.

    The model adds position vectors right-aligned (`SSEPT._embed` uses the last `length` rows of the table), so an
    input of L <= `maxlen` items gets exactly the vectors it got from the whole table: the cut model computes what
    the original computes on its last `maxlen` items. Nothing else changes (widths, blocks, heads, weights).
    """
    ckpt = read_checkpoint(source)
    stored = int(ckpt["config"]["maxlen"])
    if not 1 <= maxlen <= stored:
        raise ValueError(f"{source}: its window is {stored}; it can be cut to 1..{stored}, not {maxlen}")
    model = dict(ckpt["model"])
    model["pos_emb.weight"] = model["pos_emb.weight"][stored - maxlen:].clone()
    payload = {k: v for k, v in ckpt.items() if k != "format"}
    payload.update(config={**ckpt["config"], "maxlen": maxlen}, model=model, optimizer=None)
    return save_checkpoint(out, payload)


def fit_costs(runs: dict[str, FitResult], config: TrainConfig) -> pd.DataFrame:
    """One row per run: epochs run of the cap, best epoch and its validation NDCG@10, why it stopped, and where
    the time went (training and evaluation seconds, as `fit` measured them, and per epoch)."""
    rows = {}
    for name, run in runs.items():
        history = run.history
        train_s, eval_s = float(history["seconds"].sum()), float(history.get("eval_seconds", pd.Series()).sum())
        rows[name] = {"epochs": int(history["epoch"].max()), "cap": config.epochs, "best epoch": int(run.best["epoch"]),
                      "validation NDCG@10": round(float(run.best[SELECTION_METRIC]), 4), "stopped by": run.stop_reason,
                      "training (min)": round(train_s / 60, 1), "evaluation (min)": round(eval_s / 60, 1),
                      "training s / epoch": round(train_s / len(history), 2),
                      "evaluations": int(history[SELECTION_METRIC].notna().sum())}
    return pd.DataFrame(rows).T.rename_axis("run")


def curve_points(runs: dict[str, FitResult], epochs: tuple[int, ...]) -> pd.DataFrame:
    """Validation and test NDCG@10 of each run at the given evaluated epochs (rows), one column pair per run
    (empty where a run did not evaluate that epoch)."""
    columns = {}
    for name, run in runs.items():
        rows = run.history.set_index("epoch").reindex(list(epochs))
        columns[(name, "validation")] = rows[SELECTION_METRIC]
        columns[(name, "test")] = rows["test_ndcg@10"]
    frame = pd.DataFrame(columns)
    frame.index.name = "epoch"
    frame.columns.names = ["run", "NDCG@10"]
    return frame


def first_epochs(runs: dict[str, FitResult], levels: tuple[float, ...]) -> pd.DataFrame:
    """The first evaluated epoch at which each run's validation NDCG@10 reached each level (empty: never)."""
    table = {}
    for name, run in runs.items():
        evaluated = run.history.dropna(subset=[SELECTION_METRIC])
        table[name] = {f"≥ {level:g}": next((int(e) for e, v in zip(evaluated["epoch"], evaluated[SELECTION_METRIC])
                                             if v >= level), None) for level in levels}
    return pd.DataFrame(table).T.rename_axis("first epoch with validation NDCG@10")


def tune_budget(trials: int, done: int, epochs: int, epoch_seconds: float) -> str:
    """What a search costs before it runs, in one line: the trials left of `trials` (`done` already count) and
    the most minutes they take at `epoch_seconds` a training epoch if none were stopped before its cap of
    `epochs`; pruning and patience stop most sooner."""
    left = max(trials - done, 0)
    if left == 0:
        return f"the study has all its {trials} trials: it is only reloaded (seconds)"
    worst = left * epochs * epoch_seconds / 60
    return (f"{left} of {trials} trials to run, each at most {epochs} epochs: at {epoch_seconds:.1f} s an epoch "
            f"at most {worst:.0f} min; pruning and patience stop most trials well before their cap")


def _run_state(folder: Path, config: TrainConfig) -> str:
    """'finished', 'new' or 'resumes after epoch N' for a run folder, by `fit`'s own stop rule (`stop_reason`)
    on the history it has written."""
    history_csv = Path(folder) / "history.csv"
    if not history_csv.exists():
        return "new"
    rows = pd.read_csv(history_csv).to_dict("records")
    if not rows:
        return "new"
    evaluated = [row for row in rows if not pd.isna(row.get(SELECTION_METRIC))]
    best = max(evaluated, key=lambda row: row[SELECTION_METRIC]) if evaluated else {}  # the first of equals
    last = int(rows[-1]["epoch"])
    return "finished" if stop_reason(config, rows, best, last) else f"resumes after epoch {last}"


def training_plan(folders: dict[str, Path], config: TrainConfig, start_over: bool = False) -> str:
    """What the training cell is about to do, in one line, before it trains: which runs are only reloaded and
    which train (new, resumed, or anew with `start_over`), and what stops them."""
    states = {name: "anew" if start_over else _run_state(folder, config) for name, folder in folders.items()}
    todo = {name: state for name, state in states.items() if state != "finished"}
    if not todo:
        return f"all {len(states)} runs are finished: they are only reloaded (seconds)"
    stop = (f"until {config.patience} evaluations in a row (every {config.eval_every} epochs) bring no new best "
            f"validation NDCG@10, at most {config.epochs} epochs" if config.patience
            else f"for {config.epochs} epochs")
    said = ", ".join(f"{name} ({state})" for name, state in todo.items())
    reloaded = [name for name in states if name not in todo]
    return (f"to train: {said}; each {stop}; a progress bar shows each run's epochs and its validation NDCG@10"
            + (f"; reloaded: {', '.join(reloaded)}" if reloaded else ""))
