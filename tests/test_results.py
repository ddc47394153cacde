"""Tables of recorded runs: exact rows on a hand-made record, and the ablation's safeguards."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
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
    assert table.loc["sasrec", "model"] == "SSE-SASRec" and table.loc["both", "model"] == "SSE-PT"
    assert table.loc["pp", "test NDCG@10"] == 0.62 and table.loc["both", "full HR@10"] == 0.2


def test_curve_runs_and_machine_labels() -> None:
    assert machine_label("cuda (NVIDIA H200)") == "H200" and machine_label("cpu") == "CPU"
    results = copy.deepcopy(RESULTS)
    results = {"ssept_h200_s0": results["both"], "ssept_cpu_s1": copy.deepcopy(results["both"]),
               "ce_h200_s0": results["ce"]}
    results["ssept_h200_s0"]["group"] = "paper setting"
    results["ssept_cpu_s1"].update(group="paper setting, CPU (bucket 8)", device="cpu", seed=1)
    table = runs_table(results)
    assert curve_runs(table, group="paper") == {"SSE-PT s0 X": "ssept_h200_s0", "SSE-PT s1 CPU": "ssept_cpu_s1"}
    assert curve_runs(table, device="cuda (X)", seed=0) == {"ssept": "ssept_h200_s0", "ce": "ce_h200_s0"}


def test_speed_table_rows() -> None:
    cpu = {"machine": {"device": "cpu (2 cores, 2 torch threads)", "processor": "EPYC"}, "date": "2026-11-29 23:24",
           "runs": {"ssept_plain": {"epoch_seconds": 2.5, "notes": "x"}, "sasrec_plain": {"epoch_seconds": 1.0}}}
    gpu = {"machine": {"device": "cuda (NVIDIA H200)", "processor": "Xeon"}, "date": "2026-11-27 10:01",
           "runs": {"ssept_plain": {"epoch_seconds": 0.4, "peak_gpu_mb": 351.0}}}
    table = speed_table({"a.json": cpu, "b.json": gpu})
    assert table.loc[("EPYC, 2 torch threads, 2026-11-29", "ssept_plain"), "training epoch (s)"] == 2.5
    assert table.loc[("H200, 2026-11-27", "ssept_plain"), "peak GPU memory (MB)"] == 351.0
    assert pd.isna(table.loc[("EPYC, 2 torch threads, 2026-11-29", "sasrec_plain"), "peak GPU memory (MB)"])
    assert list(table.columns) == ["training epoch (s)", "peak GPU memory (MB)"]  # no record had evaluations


def test_candidates_table_names_what_changed() -> None:
    from helpers.notebook.results import candidates_table

    run = {"run": "a", "differs_from_faithful": {"model.item_dim": 100, "train.loss": "ce"}, "epochs_reached": 90,
           "best_epoch": 80, "valid_sampled_ndcg@10": 0.66, "sampled_ndcg@10": 0.63, "sampled_hr@10": 0.83,
           "full_ndcg@10": 0.19, "full_hr@10": 0.33}
    table = candidates_table({"runs": [run, {**run, "run": "b", "valid_sampled_ndcg@10": 0.67}]})
    assert list(table.index) == ["b", "a"] and table.loc["a", "changed"] == "item_dim 100, loss ce"


def test_ablation_picks_each_setting_once_in_order() -> None:
    table = ablation_table(RESULTS, "cuda (X)")
    # No user-only or item-only run; the CE run is left out.
    assert list(table.index) == ["no SSE", "user + item SSE (SSE-PT)", "SSE-PT++ (+ random windows)",
                                 "SSE-SASRec (no user part, item SSE)"]
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
    assert len({with_baselines[n] for n in ("popularity", "repeat-last", "most-frequent")}) == 1  # grey
    assert len(set(with_baselines.values())) == 3


def _legend_outside(ax) -> bool:
    """Whether the axes' legend lies wholly outside the axes (so it covers no data)."""
    fig = ax.figure
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    box = ax.get_window_extent()
    return (legend.x0 >= box.x1 or legend.x1 <= box.x0 or legend.y0 >= box.y1 or legend.y1 <= box.y0)


def _summary(setups: list[str]) -> pd.DataFrame:
    rows = [{"setup": s, "fraction": f, "m_mean": 0.5 + 0.01 * i, "m_std": 0.01}
            for i, s in enumerate(["popularity", "repeat-last", *setups]) for f in (0.1, 1.0)]
    return pd.DataFrame(rows)


def test_figures_keep_legends_off_the_data_and_few_lines_a_panel() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpers.notebook import plots

    history = pd.DataFrame({"epoch": [1, 2], "valid_ndcg@10": [0.1, 0.2], "test_ndcg@10": [0.1, 0.15]})
    ax = plots.learning_curves({"a": history, "b": history}, baselines={"popularity": 0.1})
    assert _legend_outside(ax) and len(ax.get_lines()) == 5
    with pytest.raises(ValueError, match="split them into groups"):
        plots.learning_curves({str(i): history for i in range(plots.MAX_PER_PANEL + 1)})
    fig = plots.learning_curve_panels({"g1": {"a": history}, "g2": {"b": history}, "g3": {"c": history}})
    shown = [a for a in fig.axes if a.get_visible()]
    assert len(shown) == 3 and all(_legend_outside(a) for a in shown)

    setups = ["s1", "s2", "s3", "s4", "s5", "s6"]
    with pytest.raises(ValueError, match="split them into groups"):
        plots.fraction_curves(_summary(setups), "m")
    groups = {"first": setups[:3], "second": setups[3:]}
    fig = plots.fraction_panels(_summary(setups), {"m": "metric"}, groups)
    for ax, members in zip(fig.axes, groups.values()):
        assert _legend_outside(ax)
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["popularity", "repeat-last", *members]
    with pytest.raises(ValueError, match="setups in no group"):
        plots.fraction_panels(_summary(setups), {"m": "metric"}, {"first": setups[:3]})
    curves = pd.DataFrame([{"setup": s, "fraction": f, "seed": seed, "epoch": e, "v": 0.1 * e}
                           for s in setups for f in (0.1, 1.0) for seed in (0, 1) for e in (1, 2)])
    fig = plots.validation_panels(curves, "v", (0.1, 1.0), groups)
    assert len(fig.axes) == 4 and all(_legend_outside(a) for a in fig.axes[2:])
    assert len(fig.axes[0].get_lines()) == 6  # three setups, two seeds each, one legend entry per setup
    plt.close("all")


def test_the_transfer_groups_cover_every_setup_once() -> None:
    from helpers.notebook.plots import MAX_PER_PANEL
    from helpers.notebook.results import TRANSFER_GROUPS
    from helpers.studies.transfer import ALL_SETUPS

    grouped = [s for members in TRANSFER_GROUPS.values() for s in members]
    assert sorted(grouped) == sorted(s.name for s in ALL_SETUPS)
    assert max(len(members) for members in TRANSFER_GROUPS.values()) <= MAX_PER_PANEL


def test_ml1m_curve_groups_put_at_most_four_runs_in_a_panel() -> None:
    from helpers.notebook.results import ml1m_curve_groups

    results = {}
    for machine, device in (("h200", "cuda (X)"), ("cpu", "cpu (2 cores, 1 torch threads)")):
        for seed in (0, 1):
            for model, user_dim, p_user in (("ssept", 50, 0.92), ("sasrec", 0, 0.0)):
                # The H200's SASRec has item SSE (SSE-SASRec), the CPU's is SASRec as published.
                record = _record(user_dim, p_user, 0.1 if machine == "h200" or user_dim else 0.0)
                record.update(group="paper setting" if machine == "h200" else "reference code's setting, CPU",
                              device=device, seed=seed)
                results[f"{model}_{machine}_s{seed}"] = record
    for name, (p_user, p_item, p_sub, loss) in {"nosse": (0.0, 0.0, 0.0, "bce"), "sseptpp": (0.92, 0.1, 0.5, "bce"),
                                                 "ce": (0.92, 0.1, 0.0, "ce")}.items():
        results[f"{name}_h200_s0"] = _record(50, p_user, p_item, p_sub, loss=loss)
    groups = ml1m_curve_groups(runs_table(results), "cuda (X)")
    assert groups == {
        "paper setting, X": {"SSE-PT s0": "ssept_h200_s0", "SSE-PT s1": "ssept_h200_s1",
                             "SSE-SASRec s0": "sasrec_h200_s0", "SSE-SASRec s1": "sasrec_h200_s1"},
        "reference code's setting, CPU": {"SASRec s0": "sasrec_cpu_s0", "SASRec s1": "sasrec_cpu_s1",
                                          "SSE-PT s0": "ssept_cpu_s0", "SSE-PT s1": "ssept_cpu_s1"},
        "SSE ablation, X, seed 0 (BCE)": {"no SSE": "nosse_h200_s0", "user + item SSE (SSE-PT)": "ssept_h200_s0"},
        "best-run candidates, X, seed 0": {"SSE-PT, BCE": "ssept_h200_s0", "SSE-PT, CE": "ce_h200_s0",
                                          "SSE-PT++, BCE": "sseptpp_h200_s0"},
    }


def test_the_run_record_lists_recorded_runs_and_study_runs(tmp_path) -> None:
    from helpers.notebook.outputs import budget_problem, run_line
    from helpers.notebook.results import recorded_runs_shown, study_runs_shown

    epochs = list(range(1, 201))
    flat = [0.5 + 0.1 * min(e, 150) / 150 if e % 5 == 0 else float("nan") for e in epochs]
    pd.DataFrame({"epoch": epochs, "valid_ndcg@10": flat}).to_csv(tmp_path / "ml1m_history_flat.csv", index=False)
    rising = [0.5 + 0.1 * e / 200 if e % 5 == 0 else float("nan") for e in epochs]
    pd.DataFrame({"epoch": epochs, "valid_ndcg@10": rising}).to_csv(tmp_path / "ml1m_history_rising.csv", index=False)
    results = {name: {"train": {"epochs": 200}} for name in ("flat", "rising")}
    flat_run, rising_run = recorded_runs_shown(results, tmp_path)
    assert (flat_run.best_epoch, flat_run.budget, flat_run.tail_gain) == (150, "paper", 0.0)
    assert budget_problem(run_line(flat_run)) is None
    assert rising_run.tail_gain == pytest.approx(0.01)  # 0.1 over 200 epochs: 0.01 in the last 20
    assert "still improving" in budget_problem(run_line(rising_run))
    study = pd.DataFrame({"kind": ["model", "model", "baseline"], "setup": ["a", "b", "popularity"],
                          "fraction": [0.1, 1.0, 0.1], "seed": [0, 1, 0], "epochs_run": [12, 90, None],
                          "epoch_cap": [400, 400, None], "best_epoch": [2, 80, None],
                          "stop_reason": ["patience", "patience", None]})
    assert study_runs_shown("study", study) == [
        "runs study (2): 12-90 of 400 epochs, best epoch 2-80, all stopped by patience"]
    study.loc[1, "stop_reason"] = "cap"
    listed = study_runs_shown("study", study)
    assert [run_line(r) for r in listed] == [
        "run a 10% s0: 12 of 400 epochs, best epoch 2, stopped by patience",
        "run b 100% s1: 90 of 400 epochs, best epoch 80, stopped by the budget"]


def test_axis_labels_are_words_and_a_narrow_band_is_not_squeezed_against_a_far_baseline() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpers.notebook import plots

    assert plots.metric_label("fullkeep_ndcg@10") == "NDCG@10 (full ranking, history kept)"
    assert plots.metric_label("unseen_fullkeep_ndcg@10", short=True) == "NDCG@10"
    assert plots.metric_label("valid_ndcg@10") == "validation NDCG@10"
    assert plots.metric_label("sampled_hr@10") == "HR@10 (sampled 1 + 100)"
    assert plots.metric_label("epoch_seconds") == "epoch_seconds"  # unknown: unchanged
    rows = [{"setup": s, "fraction": f, "m_mean": v, "m_std": 0.01}
            for s, v in (("popularity", 0.03), ("repeat-last", 0.75), ("a", 0.72), ("b", 0.80)) for f in (0.1, 1.0)]
    ax = plots.fraction_curves(pd.DataFrame(rows), "m", setups=["a", "b"])
    low, high = ax.get_ylim()
    assert 0.6 < low < 0.71 and 0.81 < high < 0.9  # the band, not 0 to 0.8
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["repeat-last", "a", "b"]
    assert any("popularity 0.030 (below the axis)" in t.get_text() for t in ax.texts)
    plt.close("all")


def test_a_setup_keeps_one_colour_across_the_panels_of_a_figure_and_no_two_share_one() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpers.notebook import plots

    setups = ["s1", "s2", "s3", "s4", "s5", "s6"]
    groups = {"first": setups[:3], "second": setups[3:]}
    summary = _summary(setups)
    fig = plots.fraction_panels(summary, {"m": "metric"}, groups)
    colour = {}
    for ax in fig.axes:
        for line, text in zip(ax.get_legend().legend_handles, ax.get_legend().get_texts()):
            if text.get_text() in setups:
                colour.setdefault(text.get_text(), set()).add(matplotlib.colors.to_hex(line.get_color()))
    assert all(len(c) == 1 for c in colour.values()) and len({c.pop() for c in colour.values()}) == len(setups)
    histories = {"a": pd.DataFrame({"epoch": [1], "valid_ndcg@10": [0.1], "test_ndcg@10": [0.1]})}
    fig = plots.learning_curve_panels({"g1": histories, "g2": {**histories, "b": histories["a"]}})
    first, second = fig.axes[0].get_lines()[0], fig.axes[1].get_lines()[0]
    assert first.get_color() == second.get_color() != fig.axes[1].get_lines()[2].get_color()
    plt.close("all")


def test_marks_for_a_narrow_band_are_dots_and_rows_are_named() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpers.notebook import plots

    table = pd.DataFrame({"x": [0.62, 0.77, 0.96], "y": [0.66, 0.80, 0.92]},
                         index=pd.Index(["1", "2", "3"], name="held-out item's training count"))
    ax = plots.metric_bars(table, ["x", "y"], "t")
    assert not ax.patches and ax.get_xlim()[0] > 0.5 and ax.get_ylabel() == "held-out item's training count"
    wide = plots.metric_bars(table.assign(x=[0.1, 0.5, 0.9]), ["x", "y"], "t", xlabel="HR@10")
    assert len(wide.patches) == 6 and wide.get_xlim()[0] == 0 and wide.get_xlabel() == "HR@10"
    ax = plots.attention_heatmap(np.eye(3), ["a" * 40, "b", "c"], "last block", window=200)
    assert ax.get_title() == "last block\nonly the last 3 of the 200 input positions are shown"
    assert ax.get_xticklabels()[0].get_text() == "a" * 31 + "…"
    assert "attention weight" in ax.figure.axes[-1].get_ylabel()
    plt.close("all")


def test_the_statistics_table_writes_counts_as_integers() -> None:
    from helpers.notebook.plots import stats_table

    table = stats_table([{"dataset": "d", "users": 6040, "rows": 999_611, "len_p50": 96.0, "len_p10": 1.5,
                          "len_p99": 905.96, "mean_len": 165.6, "repeat_share": 0.791, "density": 0.0485}])
    assert table["d"].to_dict() == {"users": "6,040", "rows (interactions)": "999,611",
                                    "rows per user: mean": "165.6", "rows per user: 10th percentile": "1.5",
                                    "rows per user: median": "96", "rows per user: 99th percentile": "906",
                                    "rows repeating the user's previous item": "79.1%",
                                    "density (rows / (users x items))": "0.0485"}


def test_summary_lines_state_the_tables_numbers() -> None:
    from helpers.notebook.results import ablation_lines, comparison_lines, transfer_lines

    results = {}
    for seed, (ours, theirs) in enumerate(((0.61, 0.59), (0.60, 0.605))):
        for name, user_dim, test in (("ssept", 50, ours), ("sasrec", 0, theirs)):
            record = _record(user_dim, 0.92 if user_dim else 0.0, 0.1 if user_dim else 0.0, test=test)
            record.update(group="reference code's setting, CPU", device="cpu", seed=seed)
            results[f"{name}_s{seed}"] = record
    # seed 1: SASRec ahead on sampled NDCG@10, so SSE-PT is ahead on both protocols on one seed only
    assert comparison_lines(runs_table(results)) == [
        "reference code's setting, CPU: SSE-PT 0.6050 sampled / 0.1000 full NDCG@10 against SASRec 0.5975 / 0.1000 "
        "(mean of 2 seeds); SSE-PT ahead on both protocols on 0 of 2 seeds"]
    results["ssept_s0"]["full_test"]["ndcg@10"] = 0.2
    assert comparison_lines(runs_table(results))[0].endswith("ahead on both protocols on 1 of 2 seeds")
    assert ablation_lines(ablation_table(RESULTS, "cuda (X)")) == [
        "SSE ablation: test NDCG@10 (sampled) 0.5500 without SSE; against it: user + item SSE (SSE-PT) +0.0600, "
        "SSE-PT++ (+ random windows) +0.0700, SSE-SASRec (no user part, item SSE) +0.0400"]
    summary = pd.DataFrame({"setup": ["repeat-last", "scratch", "copy", "repeat-last", "scratch", "copy"],
                            "fraction": [0.1, 0.1, 0.1, 1.0, 1.0, 1.0],
                            "m_mean": [0.70, 0.60, 0.75, 0.70, 0.80, 0.78]})
    assert transfer_lines(summary, "m", "M") == [
        "Wiki1000, 10% of the training users: best setup copy 0.750 M against the best baseline (repeat-last) 0.700",
        "Wiki1000, 100% of the training users: best setup scratch 0.800 M against the best baseline "
        "(repeat-last) 0.700"]
