"""The transfer study on a tiny slice: copied weights, frozen encoder, rows keyed by their settings."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import data
from helpers.checkpoint import read_checkpoint
from helpers.errors import ConfigError
from helpers.evaluate import Evaluator
from helpers.model import load_checkpoint
from helpers.settings import SSEPTConfig, TrainConfig
from helpers.studies.transfer import (
    SETUPS,
    Setup,
    best_trained_vs_baselines,
    convergence_note,
    mean_std_table,
    published_study,
    repeat_users,
    run_study,
    study_curves,
    study_plan,
    summarize,
    training_cost,
    validation_curves,
    write_summary,
)
from helpers.train import fit
from tests.test_train import SMALL, _synthetic


def test_repeat_users_by_hand(tmp_path: Path) -> None:
    path = tmp_path / "r.txt"
    # test targets: user 1 -> 3 (in its history 1,2,3), user 2 -> 4 (new), user 3 -> 1 (had it first)
    path.write_text("1 1\n1 2\n1 3\n1 3\n2 1\n2 2\n2 3\n2 4\n3 1\n3 2\n3 3\n3 1\n")
    assert repeat_users(data.leave_one_out(data.read_pairs(path))).tolist() == [1, 3]


def test_subsets_are_ranked_against_the_same_negatives(tmp_path: Path) -> None:
    split = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "s.txt", users=60)))
    whole = Evaluator(split, "test", "sampled", n_negatives=10)
    subset = split.eval_users[::3]
    part = Evaluator(split, "test", "sampled", n_negatives=10, users=subset)
    assert subset.size and np.array_equal(part.negatives[subset], whole.negatives[subset])


@pytest.fixture
def study(tmp_path: Path) -> dict:
    src = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "a.txt", users=150, items=40)))
    dst = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "b.txt", users=90, items=45, seed=3)))
    tc = TrainConfig(epochs=2, batch_size=8, eval_every=1, eval_negatives=10)
    encoders = {}
    for family, user_dim in (("ssept", SMALL["user_dim"]), ("sasrec", 0)):
        cfg = SSEPTConfig(src.data.n_users, src.data.n_items, **{**SMALL, "user_dim": user_dim})
        fit(src, cfg, tc, tmp_path / family, progress=False)
        encoders[family] = tmp_path / family / "best.pt"
    study_tc = replace(tc, epochs=30, patience=2, eval_protocol="full-keep")
    return {"split": dst, "encoders": encoders, "train": study_tc, "csv": tmp_path / "study.csv",
            "runs": tmp_path / "runs"}


def test_study_on_tiny_data(study: dict) -> None:
    args = (study["split"], study["encoders"], study["train"], study["csv"], study["runs"])
    frame = run_study(*args, setups=SETUPS, fractions=(1.0,), seeds=(0,), progress=False)
    models = frame[frame["kind"] == "model"]
    assert len(models) == len(SETUPS)
    assert set(frame["setup"]) >= {"popularity", "repeat-last", "most-frequent", "frozen", "sasrec-fine-tune"}
    assert set(models["stop_reason"]) <= {"patience", "cap"} and (models["epochs_run"] <= 30).all()
    assert (models["epochs_run"] >= models["best_epoch"]).all()
    for col in ("sampled_ndcg@10", "full_ndcg@10", "fullkeep_hr@10", "unseen_fullkeep_mrr", "unseen_sampled_hr@10"):
        assert frame[col].between(0, 1).all(), col
    # Scratch and fine-tuned runs of a family are the same model: the pretrained file's shape.
    pre = {f: read_checkpoint(p) for f, p in study["encoders"].items()}
    runs = {p.name.rsplit("-", 1)[0]: p for p in study["runs"].iterdir()}
    frozen, _ = load_checkpoint(runs["frozen-f1.0-s0"] / "best.pt")
    tuned, _ = load_checkpoint(runs["sasrec-fine-tune-f1.0-s0"] / "best.pt")
    scratch, _ = load_checkpoint(runs["sasrec-scratch-f1.0-s0"] / "best.pt")
    enc = [k for k in pre["ssept"]["model"] if k.startswith(("blocks.", "pos_emb.", "final_norm."))]
    assert all(torch.equal(frozen.state_dict()[k], pre["ssept"]["model"][k]) for k in enc)
    assert tuned.config == scratch.config and tuned.config.user_dim == 0 and tuned.config.n_items == 45
    assert not all(torch.equal(tuned.state_dict()[k], pre["sasrec"]["model"][k]) for k in enc)

    # A second call with the same settings finds every row and trains nothing.
    again = run_study(*args, setups=SETUPS, fractions=(1.0,), seeds=(0,), progress=False)
    assert again[["setup", "fraction", "seed", "settings_key"]].astype(str).equals(
        frame[["setup", "fraction", "seed", "settings_key"]].astype(str))
    np.testing.assert_allclose(again["fullkeep_ndcg@10"], frame["fullkeep_ndcg@10"], rtol=1e-12)
    summary = summarize(again)
    assert np.isfinite(summary["sampled_ndcg@10_mean"]).all()
    assert set(best_trained_vs_baselines(again).index) == {1.0}

    # The curves come from each row's own run folder: its best validation value is the one the row records.
    curves = validation_curves(frame, study["runs"])
    best = curves.groupby(["setup", "fraction", "seed"])["valid_ndcg@10"].max()
    rows = models.set_index(["setup", "fraction", "seed"])
    np.testing.assert_allclose(best.loc[rows.index].to_numpy(), rows["valid_ndcg@10"].to_numpy(), rtol=1e-12)
    last, run = curves.groupby("setup")["epoch"].max(), rows.droplevel([1, 2])["epochs_run"]
    assert (last <= run.loc[last.index]).all() and (last >= run.loc[last.index] - study["train"].eval_every).all()


def test_a_changed_setting_is_not_shown_as_the_old_row(study: dict) -> None:
    args = (study["split"], study["encoders"])
    one = (Setup("sasrec-scratch", family="sasrec"),)
    run_study(*args, study["train"], study["csv"], study["runs"], setups=one, fractions=(1.0,), seeds=(0,),
              progress=False)
    longer = replace(study["train"], epochs=40)
    with pytest.raises(ConfigError, match=r"sasrec-scratch at fraction 1.0, seed 0 under other settings "
                                          r"\(train.epochs 30 -> 40\)"):
        run_study(*args, longer, study["csv"], study["runs"], setups=one, fractions=(1.0,), seeds=(0,),
                  progress=False)
    # The same budget in another CSV trains anew; a changed pretrained file is refused too.
    fresh = run_study(*args, longer, study["csv"].with_name("other.csv"), study["runs"], setups=one,
                      fractions=(1.0,), seeds=(0,), progress=False)
    assert json.loads(fresh[fresh["kind"] == "model"]["settings"].iloc[0])["train"]["epochs"] == 40
    tuned = (Setup("fine-tune", pretrained=True),)
    run_study(*args, study["train"], study["csv"], study["runs"], setups=tuned, fractions=(1.0,), seeds=(0,),
              progress=False)
    retrained = dict(study["encoders"])
    retrained["ssept"] = study["encoders"]["sasrec"].parent.parent / "ssept" / "last.pt"
    with pytest.raises(ConfigError, match=r"pretrained.file 'best.pt' -> 'last.pt'.*pretrained.sha256"):
        run_study(study["split"], retrained, study["train"], study["csv"], study["runs"], setups=tuned,
                  fractions=(1.0,), seeds=(0,), progress=False)


def test_mean_std_table_by_hand() -> None:
    summary = pd.DataFrame({"setup": ["a", "b", "a"], "fraction": [1.0, 1.0, 0.1], "x_mean": [0.5, 0.61234, 0.1],
                            "x_std": [np.nan, 0.1, 0.2]})
    table = mean_std_table(summary, ("x",), 1.0)
    assert table.to_dict() == {"x": {"a": "0.5000 ± 0.0000", "b": "0.6123 ± 0.1000"}}


def test_summary_json_is_strict(tmp_path: Path) -> None:
    summary = pd.DataFrame({"setup": ["a", "b"], "fraction": [1.0, 1.0], "x_mean": [0.5, 0.6], "x_std": [np.nan, 0.1]})
    path = write_summary(summary, tmp_path / "s.json", csv="study.csv")
    text = path.read_text()
    assert "NaN" not in text
    loaded = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict constant {c}"))
    assert loaded["csv"] == "study.csv" and loaded["rows"][0]["x_std"] is None and loaded["rows"][1]["x_std"] == 0.1


def test_study_curves_fall_back_to_the_published_file_only_when_it_holds_the_same_runs(tmp_path: Path) -> None:
    frame = pd.DataFrame({"setup": ["scratch", "scratch", "popularity"], "fraction": [0.1, 1.0, 0.1],
                          "seed": [0, 0, 0], "settings_key": ["a" * 16, "b" * 16, "c" * 16],
                          "kind": ["model", "model", "baseline"]})
    published = tmp_path / "wiki1000_transfer_curves.csv"
    curves = pd.DataFrame({"setup": "scratch", "fraction": [0.1, 0.1, 1.0], "seed": 0, "epoch": [2, 4, 2],
                           "valid_ndcg@10": [0.5, 0.6, 0.7]})
    curves.to_csv(published, index=False)
    got, source = study_curves(frame, tmp_path / "runs", published)
    assert source.startswith("wiki1000_transfer_curves.csv") and list(got["valid_ndcg@10"]) == [0.5, 0.6, 0.7]
    curves[curves["fraction"] == 0.1].to_csv(published, index=False)  # one run missing: not the same study
    with pytest.raises(ConfigError, match="need every run folder"):
        study_curves(frame, tmp_path / "runs", published)


def test_the_published_study_is_reused_only_with_its_own_encoders_and_costs_come_from_its_rows(study: dict) -> None:
    """`published_study` returns the recorded rows of exactly the runs asked for and trains nothing; other encoders
    are refused. `study_plan` lists what `run_study` would train, and `training_cost` prices it from the rows."""
    one = (Setup("scratch"), Setup("fine-tune", pretrained=True))
    args = (study["split"], study["encoders"], study["train"])
    assert [r.name for r in study_plan(*args, None, one, (1.0,), (0,))] == ["scratch 100% s0", "fine-tune 100% s0"]
    frame = run_study(*args, study["csv"], study["runs"], one, (1.0,), (0,), progress=False)
    assert study_plan(*args, study["csv"], one, (1.0,), (0,)) == []
    before, folders = study["csv"].read_bytes(), sorted(study["runs"].iterdir())
    shown = published_study(study["split"], study["train"], one, (1.0,), (0,), csv=study["csv"],
                            encoders=study["encoders"])
    assert study["csv"].read_bytes() == before and sorted(study["runs"].iterdir()) == folders  # nothing trained
    pd.testing.assert_frame_equal(shown, pd.read_csv(study["csv"]))
    with pytest.raises(ConfigError, match=r"lacks 2 of the runs asked for \(scratch 100% s1, fine-tune 100% s1\)"):
        published_study(study["split"], study["train"], one, (1.0,), (0, 1), csv=study["csv"],
                        encoders=study["encoders"])
    other = {**study["encoders"], "ssept": study["encoders"]["sasrec"].parent.parent / "ssept" / "last.pt"}
    with pytest.raises(ConfigError, match="not the one asked for.*pretrained.sha256"):
        published_study(study["split"], study["train"], one, (1.0,), (0,), csv=study["csv"], encoders=other)

    models = frame[frame["kind"] == "model"]
    note = training_cost(study_plan(*args, None, one, (1.0,), (0,)), frame, machine="the test machine")
    total = models["train_seconds"].sum()
    assert note.startswith("2 run(s) to train. The published study recorded ")
    assert f"{total:.0f} s of training for them" in note and "the test machine" in note
    assert "No GPU time is recorded" in note
    retrained = training_cost(study_plan(study["split"], other, study["train"], None, one, (1.0,), (0,)), frame)
    assert "1 of these times are of the same runs with the committed encoders" in retrained
    assert training_cost([], frame).startswith("Nothing to train")
    longer = study_plan(study["split"], study["encoders"], replace(study["train"], epochs=31), None, one, (1.0,), (0,))
    assert "2 run(s) have settings the published study never ran" in training_cost(longer, frame)


def test_the_convergence_note_counts_runs_that_peaked_at_their_first_evaluation() -> None:
    frame = pd.DataFrame({"setup": ["a", "a", "b", "b", "popularity"], "fraction": [0.1, 0.1, 0.1, 1.0, 0.1],
                          "seed": [0, 1, 0, 0, 0], "kind": ["model"] * 4 + ["baseline"],
                          "stop_reason": ["patience"] * 4 + [np.nan], "epoch_cap": [400] * 4 + [np.nan],
                          "patience": [2] * 4 + [np.nan], "epochs_run": [6, 6, 10, 8, np.nan],
                          "best_epoch": [2, 2, 6, 2, np.nan]})
    curve = {("a", 0.1, 0): [0.5, 0.4, 0.3], ("a", 0.1, 1): [0.5, 0.5, 0.4], ("b", 0.1, 0): [0.1, 0.2, 0.3, 0.2, 0.1],
             ("b", 1.0, 0): [0.6, 0.5, 0.55, 0.5]}
    curves = pd.DataFrame([{"setup": s, "fraction": f, "seed": seed, "epoch": 2 * (i + 1), "valid_ndcg@10": v}
                           for (s, f, seed), values in curve.items() for i, v in enumerate(values)])
    assert convergence_note(frame, curves) == (
        "All 4 trained runs were stopped by patience (2 evaluations in a row without a new best), none by the "
        "400-epoch cap (the longest ran 10 epochs, the latest best epoch was 6). But 3 of the 4 runs picked their "
        "first evaluation (epoch 2) and no later one beat it until patience stopped them, so their rows are the "
        "models of that first evaluation: a at 10% of the users (both seeds), b at 100% (its one seed).")
    curves.loc[(curves["seed"] == 1) & (curves["epoch"] == 4), "valid_ndcg@10"] = 0.45  # no tie: every later lower
    assert "and got worse at every later one" in convergence_note(frame, curves)
    late = frame.assign(best_epoch=[4, 4, 6, 4, np.nan])
    assert convergence_note(late, curves).endswith("; every run's best evaluation came after its first.")
