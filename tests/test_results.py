"""Tables of recorded runs: exact rows on a hand-made record, and the ablation's safeguards."""

from __future__ import annotations

import copy
from typing import Any

import pandas as pd
import pytest

from helpers.notebook.results import ablation_table, curve_runs, machine_label, runs_table, speed_table


def _record(user_dim: int, p_user: float, p_item: float, p_sub: float = 0.0, epochs: int = 10,
            test: float = 0.5, loss: str = "bce") -> dict[str, Any]:
    return {
        "group": "g", "seed": 0, "epochs": epochs, "device": "cuda (X)",
        "model": {"user_dim": user_dim}, "train": {"loss": loss, "p_user": p_user, "p_item": p_item, "p_sub": p_sub},
        "best": {"epoch": epochs, "valid_ndcg@10": test + 0.01, "test_ndcg@10": test, "test_hr@10": 0.8,
                 "test_mrr": 0.4},
        "full_test": {"ndcg@10": 0.1, "hr@10": 0.2},
    }


RESULTS = {
    "sasrec": _record(0, 0.0, 0.1, test=0.59),
    "both": _record(50, 0.92, 0.1, test=0.61),
    "none": _record(50, 0.0, 0.0, test=0.55),
    "pp": _record(50, 0.92, 0.1, p_sub=0.5, test=0.62),
    "ce": _record(50, 0.92, 0.1, loss="ce", test=0.63),
}


def test_runs_table_rows() -> None:
    table = runs_table(RESULTS)
    assert table.loc["sasrec", "model"] == "SASRec" and table.loc["both", "model"] == "SSE-PT"
    assert table.loc["pp", "test NDCG@10"] == 0.62 and table.loc["both", "full HR@10"] == 0.2


def test_curve_runs_and_machine_labels() -> None:
    assert machine_label("cuda (NVIDIA H200)") == "H200" and machine_label("cpu") == "CPU"
    results = copy.deepcopy(RESULTS)
    results = {"ssept_h200_s0": results["both"], "ssept_cpu_s1": copy.deepcopy(results["both"]),
               "ce_h200_s0": results["ce"]}
    results["ssept_h200_s0"]["group"] = "faithful"
    results["ssept_cpu_s1"].update(group="faithful, CPU (bucket 8)", device="cpu", seed=1)
    table = runs_table(results)
    assert curve_runs(table, group="faithful") == {"SSE-PT s0 X": "ssept_h200_s0", "SSE-PT s1 CPU": "ssept_cpu_s1"}
    assert curve_runs(table, device="cuda (X)", seed=0) == {"ssept": "ssept_h200_s0", "ce": "ce_h200_s0"}


def test_speed_table_rows() -> None:
    bench = {"runs": {"ssept_plain": {"epoch_seconds": 2.5, "notes": "x"}, "sasrec_plain": {"epoch_seconds": 1.0}}}
    table = speed_table({"a.json": bench})
    assert table.loc[("a.json", "ssept_plain"), "epoch_seconds"] == 2.5
    assert pd.isna(table.loc[("a.json", "sasrec_plain"), "eval_full_seconds"])


def test_ablation_picks_each_setting_once_in_order() -> None:
    table = ablation_table(RESULTS, "cuda (X)")
    assert list(table.index) == ["no SSE", "user + item SSE (SSE-PT)", "SSE-PT++ (+ random windows)",
                                 "SASRec (no user part)"]  # no user-only or item-only run; the CE run is left out
    assert list(table["run"]) == ["none", "both", "pp", "sasrec"]
    assert table.loc["no SSE", "test NDCG@10"] == 0.55


def test_ablation_refuses_mixed_budgets_and_duplicates() -> None:
    mixed = copy.deepcopy(RESULTS)
    mixed["none"]["epochs"] = 20
    with pytest.raises(ValueError, match="different budgets"):
        ablation_table(mixed, "cuda (X)")
    twice = {**RESULTS, "both again": _record(50, 0.5, 0.2)}
    with pytest.raises(ValueError, match="matches several runs"):
        ablation_table(twice, "cuda (X)")


def test_notebook_03_prefers_a_freshly_trained_encoder(tmp_path) -> None:
    from helpers.notebook.session import ROOT, pretrained_encoders

    art = ROOT / "artifacts"
    committed = {"ssept": art / "ml1m_ssept_faithful.pt", "sasrec": art / "ml1m_sasrec.pt"}
    fresh_file = tmp_path / "best.pt"
    fresh_file.write_bytes(b"x")
    chosen, lines = pretrained_encoders(committed, {"ssept": fresh_file, "sasrec": tmp_path / "missing.pt"})
    assert chosen == {"ssept": fresh_file, "sasrec": committed["sasrec"]}
    assert lines == ["ssept: the encoder notebook 02 trained in this environment (best.pt)",
                     "sasrec: the committed encoder artifacts/ml1m_sasrec.pt"]
    assert str(tmp_path) not in " ".join(lines)  # no path of this machine in a notebook's output


def test_a_setup_keeps_its_colour_with_or_without_the_baselines() -> None:
    from helpers.notebook.plots import _colours

    with_baselines = _colours(["popularity", "repeat-last", "most-frequent", "scratch", "fine-tune"])
    without = _colours(["scratch", "fine-tune"])
    assert with_baselines["fine-tune"] == without["fine-tune"] != without["scratch"]
    assert len(set(with_baselines.values())) == 5
