"""Notebook 02's study: its runs, their command lines, their cost and their summary."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from helpers.settings import SSEPTConfig, TrainConfig
from helpers.studies import pretrain
from tests.test_train import cli_configs

PLAN = {"item_dim": 16, "user_dim": 8, "maxlen": 20, "p_user": 0.5, "p_item": 0.2}


def _runs(tmp_path: Path, seeds: tuple[int, ...] = (0, 1), **train_kw) -> list[pretrain.PlannedRun]:
    return pretrain.plan(30, 40, seeds, lambda name: tmp_path / name, **PLAN, **train_kw)


def test_plan_is_sse_pt_and_sasrec_per_seed(tmp_path: Path) -> None:
    runs = _runs(tmp_path, epochs=7, bucket=8)
    assert [r.name for r in runs] == ["SSE-PT s0", "SASRec s0", "SSE-PT s1", "SASRec s1"]
    ssept, sasrec = runs[2], runs[3]
    assert (ssept.model.user_dim, ssept.train.p_user, ssept.train.seed, ssept.train.epochs) == (8, 0.5, 1, 7)
    assert ssept.train.p_item == 0.2
    assert (sasrec.model.user_dim, sasrec.train.p_user, sasrec.train.p_item) == (0, 0.0, 0.0)  # as published: no SSE
    assert sasrec.model.item_dim == ssept.model.item_dim == 16 and sasrec.model.maxlen == 20
    for run in (ssept, sasrec):  # the reference recipe: its dropouts, the rest of the architecture pinned
        assert (run.model.attn_dropout, run.model.ffn_dropout, run.model.block) == (0.2, 0.2, "sasrec")
    assert sasrec.folder == tmp_path / "ml1m-sasrec-reference-s1" and sasrec.record == "sasrec_reference"


@pytest.mark.parametrize("index", [0, 1])
def test_command_line_trains_the_same_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, index: int) -> None:
    """The printed command, given to the training CLI, builds exactly the planned configs."""
    run = _runs(tmp_path, epochs=7, eval_every=3, bucket=8, chunks=2, p_sub=0.1)[index]
    argv = run.command().split()[3:]
    assert argv[argv.index("--out") + 1] == f"runs/ml1m-{run.family}-reference-s0"
    argv.remove("--resume")  # no stored run to read here
    assert cli_configs(monkeypatch, argv) == (run.model, run.train)


def test_cost_note_counts_the_epochs_left(tmp_path: Path) -> None:
    runs = _runs(tmp_path, seeds=(0,), epochs=200)
    runs[0].folder.mkdir()
    pd.DataFrame({"epoch": range(1, 6)}).to_csv(runs[0].folder / "history.csv", index=False)
    note = pretrain.cost_note(runs, {"ssept": (10.0, "box"), "sasrec": (5.0, "box")})
    assert note.startswith("about to train 395 epochs over 2 runs: about 0.8 h")  # 195 x 10 s + 200 x 5 s
    assert "10.0 s per SSE-PT epoch, 5.0 s per SASRec epoch (box)" in note
    done = _runs(tmp_path, seeds=(0,), epochs=5)[:1]
    assert pretrain.cost_note(done, {"ssept": (10.0, "box")}) == "all 1 runs are finished: they are only reloaded"


def test_committed_epoch_seconds_by_hand() -> None:
    def record(group: str, device: str, user_dim: int, seconds: float) -> dict:
        return {"group": group, "device": device, "model": {"user_dim": user_dim}, "train_seconds": seconds,
                "epochs": 100, "machine": f"{device} box"}

    group = f"{pretrain.GROUP}, CPU"
    results = {"a": record(group, "cpu", 50, 2000.0), "b": record(group, "cpu", 50, 1000.0),
               "c": record(group, "cpu", 0, 500.0), "d": record("ablation", "cpu", 50, 9e9),
               "e": record(pretrain.GROUP, "cuda (H200)", 50, 100.0), "f": record("paper setting", "cpu", 50, 1.0)}
    assert pretrain.committed_epoch_seconds(results, "cpu") == {"ssept": (15.0, "cpu box"), "sasrec": (5.0, "cpu box")}
    assert pretrain.committed_epoch_seconds(results, "cuda") == {"ssept": (1.0, "cuda (H200) box")}


def test_benchmarked_epoch_seconds_pick_the_run_s_layout() -> None:
    assert [pretrain.bench_layout(b, c) for b, c in ((8, 1), (0, 1), (0, 0), (0, 2))] == [
        "bucket8", "plain", "chunks4", "chunks2"]
    bench = {"machine": {"processor": "EPYC", "device": "cpu (2 cores)"}, "date": "2026-11-29 23:24:29 UTC",
             "runs": {"ssept_bucket8": {"epoch_seconds": 7.1}, "ssept_chunks4": {"epoch_seconds": 7.5},
                      "sasrec_bucket8": {"epoch_seconds": 3.7}}}
    where = "EPYC, cpu (2 cores), benchmarked 2026-11-29"
    assert pretrain.benchmarked_epoch_seconds(bench, "bucket8") == {"ssept": (7.1, where), "sasrec": (3.7, where)}
    assert pretrain.benchmarked_epoch_seconds(bench, "plain") == {}


def test_expected_cpu_epoch_seconds_prefer_the_benchmark_with_both_families(tmp_path: Path) -> None:
    bench = {"machine": {"processor": "EPYC", "device": "cpu"}, "date": "2026-11-29",
             "runs": {"ssept_bucket8": {"epoch_seconds": 7.0}, "sasrec_bucket8": {"epoch_seconds": 3.5},
                      "ssept_plain": {"epoch_seconds": 9.0}}}
    (tmp_path / pretrain.CPU_BENCH).write_text(json.dumps(bench))
    record = {"group": f"{pretrain.GROUP}, CPU", "device": "cpu", "model": {"user_dim": 50}, "train_seconds": 3000.0,
              "epochs": 100, "machine": "box"}
    (tmp_path / "ml1m_results.json").write_text(json.dumps({"a": record}))
    assert pretrain.expected_cpu_epoch_seconds(tmp_path, "bucket8")["ssept"][0] == 7.0
    assert pretrain.expected_cpu_epoch_seconds(tmp_path, "plain") == {"ssept": (30.0, "box")}  # SASRec untimed


def test_seed_summary_and_wins(tmp_path: Path) -> None:
    runs = _runs(tmp_path)
    table = pd.DataFrame({"ndcg": [0.6, 0.5, 0.4, 0.45, 0.1]},
                         index=["SSE-PT s0", "SASRec s0", "SSE-PT s1", "SASRec s1", "popularity"])
    summary = pretrain.seed_summary(table, runs)
    assert summary.loc["SSE-PT"].to_dict() == pytest.approx({("mean", "ndcg"): 0.5, ("min", "ndcg"): 0.4,
                                                             ("max", "ndcg"): 0.6})
    assert list(summary.index) == ["SSE-PT", "SASRec"]
    assert pretrain.wins(table, (0, 1), "ndcg") == 1


def test_plan_uses_the_model_defaults_only_through_presets(tmp_path: Path) -> None:
    run = _runs(tmp_path)[0]
    assert isinstance(run.model, SSEPTConfig) and isinstance(run.train, TrainConfig)
    assert run.train.loss == "bce" and run.train.p_sub == 0.0  # the reference recipe


class _Fit:
    def __init__(self, epochs: int, best: int, device: str | None) -> None:
        self.history = pd.DataFrame({"epoch": range(1, epochs + 1), "seconds": [2.0] * (epochs - 1) + [9.0]})
        if device:
            self.history["device"] = device
        self.best = {"epoch": best, "valid_ndcg@10": 0.6, "test_ndcg@10": 0.58, "test_hr@10": 0.8}


def test_per_run_table_and_devices_say_what_trained() -> None:
    results = {"SSE-PT s0": _Fit(4, 3, "cpu (2 cores, 1 torch threads)"), "SASRec s0": _Fit(3, 3, None)}
    table = pretrain.per_run_table(results)
    assert table.loc["SSE-PT s0", "best epoch"] == 3 and table.loc["SSE-PT s0", "median epoch (s)"] == 2.0
    assert table.loc["SASRec s0", "trained on"] == "not recorded" and table.loc["SASRec s0", "epochs trained"] == 3
    assert pretrain.training_devices(results) == "cpu (2 cores, 1 torch threads)"


def test_summary_states_means_and_wins(tmp_path: Path) -> None:
    runs = _runs(tmp_path)
    columns = pd.MultiIndex.from_product([("sampled", "full"), ("ndcg@10", "hr@10")])
    table = pd.DataFrame([[0.6, 0.8, 0.14, 0.26], [0.5, 0.7, 0.12, 0.23], [0.4, 0.6, 0.13, 0.25],
                          [0.45, 0.65, 0.12, 0.24]], index=["SSE-PT s0", "SASRec s0", "SSE-PT s1", "SASRec s1"],
                         columns=columns)
    sampled, full = pretrain.summary(table, runs, (0, 1))
    assert sampled == ("sampled protocol, test NDCG@10 / HR@10 (mean of 2 seeds): SSE-PT 0.5000 / 0.7000, "
                       "SASRec 0.4750 / 0.6750; SSE-PT ahead on 1 of 2 seeds")
    assert full.endswith("SSE-PT ahead on 2 of 2 seeds")
