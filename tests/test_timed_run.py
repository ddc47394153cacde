"""The records of GPU checks: a timed run (the speed target) and the agreement of two runs (the torchrun check)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from helpers import data
from helpers.checkpoint import save_checkpoint
from helpers.errors import ConfigError
from helpers.studies.agreement import agreement
from helpers.studies.agreement import main as agreement_main
from helpers.studies.candidates import QUALITY_TARGET, meets
from helpers.studies.candidates import main as candidates_main
from helpers.studies.timed_run import main, target_met, timed_run_record
from helpers.train import fit
from tests.test_train import TC, _config, _synthetic


@pytest.mark.parametrize(("wall", "test_ndcg", "met"),
                         [(60.0, 0.60, True), (60.1, 0.61, False), (30.0, 0.599, False)])
def test_target_needs_both_the_time_and_the_quality(wall: float, test_ndcg: float, met: bool) -> None:
    assert target_met(wall, test_ndcg) is met


def test_times_come_from_the_history_and_metrics_from_best_pt(tmp_path: Path) -> None:
    pd.DataFrame({"epoch": [1, 2, 3, 4], "seconds": [5.0, 0.1, 0.1, 0.1], "elapsed": [5.0, 5.1, 5.2, 5.3],
                  "valid_ndcg@10": [None, 0.4, None, 0.5], "eval_seconds": [None, 0.5, None, 0.5]}
                 ).to_csv(tmp_path / "history.csv", index=False)
    best = {"epoch": 4, "valid_ndcg@10": 0.5, "test_ndcg@10": 0.61, "test_hr@10": 0.83}
    save_checkpoint(tmp_path / "best.pt", {"config": {}, "model": {}, "epoch": 4, "history": [], "best": best})
    record = timed_run_record(tmp_path, 59.96, "reduce-overhead", "cuda (card)")
    assert (record["epochs"], record["evaluations"], record["best_epoch"]) == (4, 2, 4)
    assert (record["first_epoch_seconds"], record["median_epoch_seconds_after_first"]) == (5.0, 0.1)
    assert (record["train_loop_seconds"], record["eval_seconds_total"]) == (5.3, 1.0)
    assert (record["wall_seconds"], record["test_sampled_ndcg@10"], record["met"]) == (60.0, 0.61, True)


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
    with pytest.raises(ConfigError, match="no history or best.pt"):
        timed_run_record(tmp_path / "missing", 1.0, "off", "cpu")


def _history(folder: Path, loss: list[float], ndcg: list[float | None], epochs: list[int] | None = None) -> Path:
    folder.mkdir()
    pd.DataFrame({"epoch": epochs or list(range(1, len(loss) + 1)), "loss": loss, "seconds": 1.0,
                  "valid_ndcg@10": ndcg}).to_csv(folder / "history.csv", index=False)
    return folder


def test_agreement_takes_the_largest_gap_over_shared_epochs(tmp_path: Path) -> None:
    a = _history(tmp_path / "a", [0.9, 0.8, 0.7], [None, 0.5, 0.6])
    b = _history(tmp_path / "b", [0.9, 0.8004], [None, 0.5002], epochs=[1, 2])
    record = agreement(a, b)
    assert record["epochs"] == [1, 2]
    assert record["max_abs_gap"] == pytest.approx(4e-4)
    assert record["agree"] is True
    assert agreement(a, b, tolerance=1e-4)["agree"] is False


def test_agreement_cli_writes_the_record_and_refuses_runs_without_a_shared_epoch(tmp_path: Path) -> None:
    a = _history(tmp_path / "a", [0.9], [0.5])
    b = _history(tmp_path / "b", [0.95], [0.5], epochs=[2])
    with pytest.raises(ConfigError, match="share no finished epoch"):
        agreement(a, b)
    c = _history(tmp_path / "c", [0.9], [0.51])
    assert agreement_main([str(a), str(c), "--out", str(tmp_path / "r.json"), "--note", "n"]) == 0
    record = json.loads((tmp_path / "r.json").read_text())
    assert (record["agree"], record["note"], record["max_abs_gap"]) == (False, "n", pytest.approx(0.01))


def test_candidate_record_reads_the_run_and_its_full_ranking(tmp_path: Path) -> None:
    split = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "s.txt")))
    result = fit(split, _config(split), TC(epochs=2, eval_every=1, loss="ce", compile="off"), tmp_path / "run",
                 progress=False)
    (tmp_path / "run" / "full_test.json").write_text(json.dumps({"ndcg@10": 0.25, "hr@10": 0.5}))
    assert candidates_main([str(tmp_path / "run"), "--card", "cpu", "--out", str(tmp_path / "c.json"),
                            "--histories", str(tmp_path / "c.csv")]) == 0
    record = json.loads((tmp_path / "c.json").read_text())["runs"][0]
    assert (record["run"], record["epochs_reached"], record["best_epoch"]) == ("run", 2, result.best["epoch"])
    assert record["sampled_ndcg@10"] == pytest.approx(result.best["test_ndcg@10"], abs=1e-12)
    assert (record["full_ndcg@10"], record["full_hr@10"], record["meets_target"]) == (0.25, 0.5, False)
    # Only what changes learning is listed: the loss and the test config's widths, not the epochs or the seed.
    assert record["differs_from_faithful"]["train.loss"] == "ce"
    assert not {"train.epochs", "train.eval_every", "train.seed"} & set(record["differs_from_faithful"])
    assert list(pd.read_csv(tmp_path / "c.csv")["run"]) == ["run", "run"]


def test_the_quality_target_needs_every_half() -> None:
    assert meets(dict(QUALITY_TARGET))
    for key in QUALITY_TARGET:
        assert not meets(dict(QUALITY_TARGET) | {key: QUALITY_TARGET[key] - 1e-4})
