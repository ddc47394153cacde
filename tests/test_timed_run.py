"""The record of a timed run (the GPU speed target): from a real run folder, and its target check."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from helpers import data
from helpers.errors import ConfigError
from helpers.timed_run import best_row, main, timed_run_record
from helpers.train import fit
from tests.test_train import TC, _config, _synthetic


def _history(ndcgs: list[float | None], test: list[float | None]) -> pd.DataFrame:
    n = len(ndcgs)
    return pd.DataFrame({"epoch": range(1, n + 1), "loss": [1.0] * n, "seconds": [5.0] + [0.1] * (n - 1),
                         "elapsed": [5.0 + 0.1 * i for i in range(n)], "valid_ndcg@10": ndcgs,
                         "test_ndcg@10": test, "test_hr@10": test, "eval_seconds": [0.5 if v else None for v in ndcgs]})


def test_best_row_is_the_first_of_the_highest_validation() -> None:
    history = _history([None, 0.3, None, 0.5, 0.5], [None, 0.2, None, 0.61, 0.7])
    row = best_row(history)
    assert (int(row["epoch"]), row["test_ndcg@10"]) == (4, 0.61)
    with pytest.raises(ConfigError, match="no evaluated epoch"):
        best_row(_history([None, None], [None, None]))


@pytest.mark.parametrize(("wall", "test_ndcg", "met"), [(59.9, 0.61, True), (60.1, 0.61, False), (30.0, 0.59, False)])
def test_target_needs_both_the_time_and_the_quality(tmp_path: Path, wall: float, test_ndcg: float, met: bool) -> None:
    _history([None, 0.4, None, 0.5], [None, 0.3, None, test_ndcg]).to_csv(tmp_path / "history.csv", index=False)
    record = timed_run_record(tmp_path, wall, "reduce-overhead", "cuda (card)")
    assert record["met"] is met
    assert (record["epochs"], record["evaluations"], record["best_epoch"]) == (4, 2, 4)
    assert (record["first_epoch_seconds"], record["median_epoch_seconds_after_first"]) == (5.0, 0.1)
    assert (record["train_loop_seconds"], record["eval_seconds_total"]) == (5.3, 1.0)


def test_record_of_a_real_run_matches_what_fit_reported(tmp_path: Path) -> None:
    split = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "s.txt")))
    result = fit(split, _config(split), TC(epochs=4, eval_every=2), tmp_path / "run", progress=False)
    out = tmp_path / "timed.json"
    assert main([str(tmp_path / "run"), "--wall", "12.34", "--mode", "off", "--device", "cpu", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["card"].startswith("cpu") and record["mode"] == "off" and record["wall_seconds"] == 12.3
    assert (record["epochs"], record["eval_every"], record["evaluations"]) == (4, 2, 2)
    assert record["best_epoch"] == result.best["epoch"]
    assert record["test_sampled_ndcg@10"] == pytest.approx(result.best["test_ndcg@10"], abs=1e-12)
    assert record["settings"]["model"]["item_dim"] == _config(split).item_dim
    with pytest.raises(ConfigError, match="no history"):
        timed_run_record(tmp_path / "missing", 1.0, "off", "cpu")
