"""Notebook 05's helpers: history lengths against windows, a checkpoint cut to a shorter window, run costs."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import data
from helpers.checkpoint import save_checkpoint
from helpers.model import SSEPT, load_checkpoint
from helpers.notebook.own_data import (
    curve_points,
    first_epochs,
    fit_costs,
    history_windows,
    training_plan,
    tune_budget,
    window_checkpoint,
)
from helpers.settings import SSEPTConfig, TrainConfig
from helpers.train import FitResult


def _data(lengths: list[int]) -> data.SequenceData:
    items = np.concatenate([np.arange(1, n + 1) for n in lengths])
    offsets = np.zeros(len(lengths) + 2, dtype=np.int64)
    np.cumsum([0, *lengths], out=offsets[1:])
    return data.SequenceData("d", len(lengths), max(lengths), offsets, items)


def test_history_windows_count_users_and_positions() -> None:
    """Histories of 5, 10 and 40 items: 3, 8 and 38 training items (two held out), 2, 7 and 37 targets."""
    split = data.leave_one_out(_data([5, 10, 40]))
    table = history_windows(split, (5, 10, 100))
    assert table.loc[5, "users whose history fits"] == pytest.approx(1 / 3)  # 3 items fit, 8 do not
    assert table.loc[10, "users whose history fits"] == pytest.approx(2 / 3)
    assert table.loc[5, "training positions per epoch"] == pytest.approx((2 + 5 + 5) / 46)
    assert table.loc[100].tolist() == [1.0, 1.0]


def test_a_cut_window_computes_what_the_whole_table_computes(tmp_path: Path) -> None:
    config = SSEPTConfig(n_users=4, n_items=30, item_dim=8, user_dim=4, maxlen=20, dropout=0.0)
    model = SSEPT(config).eval()
    source = save_checkpoint(tmp_path / "full.pt", {"config": asdict(config), "model": model.state_dict(),
                                                    "epoch": 1, "history": [], "train": None, "optimizer": None})
    cut, _ = load_checkpoint(window_checkpoint(source, 6, tmp_path / "cut.pt"))
    assert cut.config.maxlen == 6 and cut.pos_emb.weight.shape == (6, 12)
    users, seqs = torch.tensor([1, 2]), torch.tensor([[0, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6]])
    assert torch.equal(cut(users, seqs), model(users, seqs))
    same = {k: torch.equal(v, model.state_dict()[k]) for k, v in cut.state_dict().items() if k != "pos_emb.weight"}
    assert all(same.values()) and torch.equal(cut.pos_emb.weight, model.pos_emb.weight[-6:])
    with pytest.raises(ValueError, match="cut to 1..20, not 21"):
        window_checkpoint(source, 21, tmp_path / "no.pt")


def test_fit_costs_split_training_from_evaluation() -> None:
    history = pd.DataFrame({"epoch": [1, 2, 3, 4], "seconds": [2.0, 2.0, 2.0, 2.0],
                            "eval_seconds": [None, 30.0, None, 30.0], "valid_ndcg@10": [None, 0.3, None, 0.2]})
    run = FitResult(None, history, {"epoch": 2, "valid_ndcg@10": 0.3}, None, "cpu", "patience")  # type: ignore[arg-type]
    row = fit_costs({"a": run}, TrainConfig(epochs=100, patience=1)).loc["a"]
    assert (row["epochs"], row["cap"], row["best epoch"], row["stopped by"]) == (4, 100, 2, "patience")
    assert (row["training (min)"], row["evaluation (min)"], row["training s / epoch"], row["evaluations"]) == (
        0.1, 1.0, 2.0, 2)


def test_curve_points_and_first_epochs_read_the_evaluations() -> None:
    history = pd.DataFrame({"epoch": [1, 2, 3, 4], "valid_ndcg@10": [None, 0.2, None, 0.5],
                            "test_ndcg@10": [None, 0.1, None, 0.4]})
    runs = {"a": FitResult(None, history, {"epoch": 4}, None, "cpu", "patience")}  # type: ignore[arg-type]
    points = curve_points(runs, (2, 3, 4))
    assert points.loc[2, ("a", "validation")] == 0.2 and points.loc[4, ("a", "test")] == 0.4
    assert pd.isna(points.loc[3, ("a", "validation")])
    first = first_epochs(runs, (0.1, 0.3, 0.9))
    assert first.loc["a", "≥ 0.1"] == 2 and first.loc["a", "≥ 0.3"] == 4 and pd.isna(first.loc["a", "≥ 0.9"])


def test_the_search_budget_is_stated_before_it_runs() -> None:
    assert tune_budget(10, 4, 100, 3.0) == ("6 of 10 trials to run, each at most 100 epochs: at 3.0 s an epoch at "
                                            "most 30 min; pruning and patience stop most trials well before their cap")
    assert tune_budget(10, 10, 100, 3.0) == "the study has all its 10 trials: it is only reloaded (seconds)"


def test_the_training_plan_says_which_runs_train_before_they_do(tmp_path: Path) -> None:
    config = TrainConfig(epochs=100, eval_every=5, patience=2)

    def rows(values: list[float | None]) -> pd.DataFrame:
        return pd.DataFrame({"epoch": range(1, len(values) + 1), "valid_ndcg@10": values})

    done, partial = tmp_path / "done", tmp_path / "partial"
    done.mkdir()
    partial.mkdir()
    # best at epoch 2, then two evaluations without a new best: patience 2 is spent
    rows([0.1, 0.3, None, 0.3, 0.2]).to_csv(done / "history.csv", index=False)
    rows([0.1, 0.3, None, 0.2]).to_csv(partial / "history.csv", index=False)  # one evaluation since the best
    folders = {"a": done, "b": partial, "c": tmp_path / "new"}
    assert training_plan(folders, config) == (
        "to train: b (resumes after epoch 4), c (new); each until 2 evaluations in a row (every 5 epochs) bring no "
        "new best validation NDCG@10, at most 100 epochs; a progress bar shows each run's epochs and its validation "
        "NDCG@10; reloaded: a")
    assert training_plan({"a": done}, config) == "all 1 runs are finished: they are only reloaded (seconds)"
    assert training_plan({"a": done}, config, start_over=True).startswith("to train: a (anew); each until")
    # a run at its cap is finished whatever its patience says
    assert training_plan({"b": partial}, TrainConfig(epochs=4, eval_every=5, patience=2)).startswith("all 1 runs")
