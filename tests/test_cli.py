"""Command lines and notebook helpers, run as a user would."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import data
from helpers.notebook.session import export_run, run_record
from helpers.settings import TrainConfig
from helpers.train import fit
from tests.test_train import ROOT, SMALL, _env, _synthetic


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], env=_env(), cwd=ROOT, capture_output=True, text=True)


def test_help_for_every_command() -> None:
    for module in ("helpers.data", "helpers.train", "helpers.evaluate", "helpers.studies.bench"):
        res = _run(module, "--help")
        assert res.returncode == 0 and "usage:" in res.stdout, module


def test_train_help_says_what_the_attention_dropout_default_means() -> None:
    """Issue 18: the sentinel default (-1.0) is shown as what it means."""
    res = _run("helpers.train", "--help")
    words = " ".join(res.stdout.split())  # the same however argparse wraps the lines
    assert "--attn-dropout ATTN_DROPOUT default: same as --dropout" in words and "-1.0" not in words


def test_bench_layout_names() -> None:
    from helpers.studies.bench import parse_layout

    assert parse_layout("plain") == {"bucket": 0, "chunks": 1, "amp": True, "compile": "off"}
    assert parse_layout("chunks4") == {"bucket": 0, "chunks": 4, "amp": True, "compile": "off"}
    assert parse_layout("bucket8-fp32") == {"bucket": 8, "chunks": 1, "amp": False, "compile": "off"}
    assert parse_layout("plain-fp32-graphs") == {"bucket": 0, "chunks": 1, "amp": False, "compile": "reduce-overhead"}
    assert parse_layout("chunks2-compile")["compile"] == "default"
    for bad in ("chunks", "plain4", "fp32", "chunks4-amp", "plain-graphs-fp32", "plain-compile-graphs"):
        with pytest.raises(argparse.ArgumentTypeError, match="layout must be"):
            parse_layout(bad)


def test_data_fetch_and_unknown_dataset(tmp_path: Path) -> None:
    res = _run("helpers.data", "fetch", "--dataset", "wiki1000", "--data-dir", str(tmp_path))
    assert res.returncode == 0 and str(tmp_path / "wikipedia.txt") in res.stdout
    res = _run("helpers.data", "fetch", "--dataset", "nope", "--data-dir", str(tmp_path))
    assert res.returncode == 2 and res.stderr.startswith("error: unknown dataset 'nope'")


def test_train_then_evaluate_prints_the_recorded_number(tmp_path: Path) -> None:
    dataset = _synthetic(tmp_path / "s.txt")
    out = tmp_path / "run"
    res = _run("helpers.train", "--dataset", str(dataset), "--out", str(out), "--epochs", "2", "--quiet",
               "--batch-size", "16", "--eval-every", "1", "--item-dim", "16", "--user-dim", "8", "--maxlen", "30",
               "--eval-negatives", "10")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    # evaluate's default is 100 negatives; with 40 items that is impossible, and it says so
    res = _run("helpers.evaluate", "--checkpoint", str(out / "best.pt"), "--dataset", str(dataset))
    assert res.returncode == 2 and "items outside their history; 100 negatives are needed" in res.stderr
    # the full protocol needs no negatives: its number is reproducible from the checkpoint
    res = _run("helpers.evaluate", "--checkpoint", str(out / "best.pt"), "--dataset", str(dataset),
               "--protocol", "full", "--split", "valid")
    assert res.returncode == 0, res.stderr
    first = json.loads(res.stdout)
    again = json.loads(_run("helpers.evaluate", "--checkpoint", str(out / "best.pt"), "--dataset", str(dataset),
                            "--protocol", "full", "--split", "valid").stdout)
    assert first["ndcg@10"] == again["ndcg@10"] and first["users"] == 120
    assert summary["best"]["epoch"] in (1, 2)


def test_skipped_users_are_counted(tiny_file: Path) -> None:
    from helpers.evaluate import Evaluator
    from helpers.model import SSEPT
    from helpers.settings import SSEPTConfig

    split = data.leave_one_out(data.read_pairs(tiny_file))
    model = SSEPT(SSEPTConfig(3, 6, item_dim=4, user_dim=4, maxlen=5))
    result = Evaluator(split, "test", "full")(model)
    assert result["users"] == 2 and result["skipped_users"] == 1


def test_export_run_writes_small_artifacts(tmp_path: Path) -> None:
    split = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "s.txt")))
    from helpers.model import load_checkpoint
    from helpers.settings import SSEPTConfig

    cfg = SSEPTConfig(split.data.n_users, split.data.n_items, **SMALL)
    fit(split, cfg, TrainConfig(epochs=2, batch_size=16, eval_negatives=10, eval_every=1), tmp_path / "run",
        progress=False)
    for leftover in ("last.pt", "prev.pt"):  # an exported run needs only run.json, history.csv and best.pt
        (tmp_path / "run" / leftover).unlink(missing_ok=True)
    # Each epoch's row names what trained it; a run resumed elsewhere is recorded with both, in order.
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    here = history["device"].iloc[-1]
    assert here.startswith("cpu (") and "torch thread" in here
    history.loc[0, "device"] = "cuda (card)"
    history.to_csv(tmp_path / "run" / "history.csv", index=False)
    entry = export_run(tmp_path / "run", "tiny", {"command": "test", "device": "the notebook's"},
                       dest=tmp_path / "art", weights_file="ml1m_tiny.pt")
    assert entry["device"] == f"cuda (card); {here}"
    model, ckpt = load_checkpoint(tmp_path / "art" / "ml1m_tiny.pt")
    assert ckpt["optimizer"] is None and model.config == cfg
    assert entry["epochs"] == 2 and entry["command"] == "test" and entry["weights"] == "ml1m_tiny.pt"
    assert entry["train"]["epochs"] == 2 and entry["model"]["item_dim"] == cfg.item_dim
    results = json.loads((tmp_path / "art" / "ml1m_results.json").read_text())
    assert results["tiny"]["best"]["epoch"] == entry["best"]["epoch"]
    assert len(pd.read_csv(tmp_path / "art" / "ml1m_history_tiny.csv")) == 2
    record = run_record({"EPOCHS": 2}, 0.0, "cpu")
    assert "machine" in record.index and record.loc["param EPOCHS", "value"] == "2"


def _tiny_pairs(tmp_path: Path) -> data.SequenceData:
    """30 users with 6 distinct items each out of 120, written to and read from a 'user item' file."""
    rng = np.random.default_rng(0)
    lines = [f"{u} {i}" for u in range(1, 31) for i in rng.choice(np.arange(1, 121), size=6, replace=False)]
    (tmp_path / "d.txt").write_text("\n".join(lines) + "\n")
    return data.read_pairs(tmp_path / "d.txt")


def test_bench_eval_times_every_user_at_each_batch_size(tmp_path: Path) -> None:
    from helpers.model import SSEPT
    from helpers.settings import SSEPTConfig
    from helpers.studies.bench import bench_eval

    split = data.leave_one_out(_tiny_pairs(tmp_path))
    model = SSEPT(SSEPTConfig(split.data.n_users, split.data.n_items, item_dim=8, user_dim=4, maxlen=10))
    out = bench_eval(split, model, torch.device("cpu"), compare_batches=(7,), repeats=1)
    assert out["eval_users"] == split.eval_users.size == 30
    assert set(out) == {"eval_users", "eval_sampled_seconds", "eval_sampled_seconds_batch7",
                        "eval_full_seconds", "eval_full_seconds_batch7"}


def test_bench_times_the_preset_models_through_fits_setup(tmp_path: Path) -> None:
    """The benchmark asks helpers.settings for its models (paper recipe) and builds them as `fit` does."""
    from dataclasses import replace

    from helpers import settings
    from helpers.studies.bench import BENCH_RECIPE, bench_configs, bench_training

    split = data.leave_one_out(_tiny_pairs(tmp_path))
    for family in settings.FAMILIES:
        model_config, train = bench_configs(family, split.data, "chunks2-fp32")
        assert model_config == settings.model_config(family, split.data.n_users, split.data.n_items, BENCH_RECIPE)
        assert train == settings.train_config(family, BENCH_RECIPE, bucket=0, chunks=2, amp=False, compile="off")
        assert (model_config.maxlen, train.batch_size) == (200, 128)
        assert train.p_item == settings.FAMILIES[family][1]["p_item"]  # SASRec as published has none
    small = replace(model_config, item_dim=8, maxlen=10)
    row = bench_training(split, small, replace(train, batch_size=8), torch.device("cpu"), epochs=1)
    assert row["timed_batches"] == 4 and np.isfinite(row["final_loss"])


def test_bench_records_a_failing_layout_and_writes_after_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A layout that raises (a compile mode failing on a new GPU, say) is a result with its error;
    the other layouts still run, and the result so far is handed out after every layout."""
    from helpers.studies import bench

    monkeypatch.setattr(bench, "load", lambda name: _tiny_pairs(tmp_path))
    monkeypatch.setattr(bench, "matmul_gflops", lambda device: {"skinny": 1.0, "square": 1.0})

    def fake_row(split, family, layout, device, args, skinny):  # noqa: ANN001, ANN202
        if layout.endswith("-graphs"):
            raise RuntimeError("no CUDA graphs here")
        return {"epoch_seconds": 1.0}

    monkeypatch.setattr(bench, "bench_row", fake_row)
    seen: list[list[str]] = []
    args = argparse.Namespace(models=["ssept"], layouts=["plain-fp32", "plain-fp32-graphs", "plain"],
                              device="cpu", epochs=1, eval_batches=[], scale=False)
    result = bench.run(args, on_row=lambda r: seen.append(list(r["runs"])))
    assert result["runs"]["ssept_plain-fp32-graphs"] == {"error": "RuntimeError: no CUDA graphs here"}
    assert result["runs"]["ssept_plain"] == {"epoch_seconds": 1.0}
    assert seen == [["ssept_plain-fp32"], ["ssept_plain-fp32", "ssept_plain-fp32-graphs"],
                    ["ssept_plain-fp32", "ssept_plain-fp32-graphs", "ssept_plain"]]
