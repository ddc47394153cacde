"""Tables of the recorded ML-1M runs (`artifacts/ml1m_results.json`): every run, the SSE ablation, and the
lines that sum them up (`comparison_lines`, `ablation_lines`, `transfer_lines`).

Each run's record (written by `helpers.notebook.export_run`) holds its settings, the best
epoch by validation NDCG@10 with its validation and test metrics (sampled protocol), the
full-ranking test metrics where they were measured, the command and the machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from helpers.notebook.outputs import PAPER_EPOCHS, RunShown, runs_line
from helpers.notebook.session import run_shown

#: Ablation rows in display order.
ABLATION = ("no SSE", "user SSE only", "item SSE only", "user + item SSE (SSE-PT)", "SSE-PT++ (+ random windows)",
            "SSE-SASRec (no user part, item SSE)")
#: Groups of `ml1m_results.json` that compare SSE-PT with SASRec on several seeds (the recipe named first; the
#: device type may follow, e.g. "reference code's setting, CPU").
COMPARISON_GROUPS = ("paper setting", "reference code's setting")


def model_name(train: dict[str, Any], model: dict[str, Any]) -> str:
    """What a recorded run's model is: "SSE-PT" (with a user part; its SSE is in the ablation label), "SASRec"
    (no user part and no SSE, as published) or "SSE-SASRec" (no user part, item SSE)."""
    if model["user_dim"]:
        return "SSE-PT"
    return "SSE-SASRec" if train["p_item"] > 0 else "SASRec"


def dropouts_name(model: dict[str, Any]) -> str:
    """Whose dropouts a recorded run has: "reference code" (also on the attention weights and inside the
    feed-forward layer) or "paper" (records from before those settings existed had none there)."""
    return "reference code" if model.get("attn_dropout", 0.0) or model.get("ffn_dropout", 0.0) else "paper"


def ablation_label(train: dict[str, Any], model: dict[str, Any]) -> str | None:
    """Which `ABLATION` row a run's settings make (None: none of them, e.g. SSE-PT++ without both SSE parts)."""
    if model["user_dim"] == 0:
        return ABLATION[5]
    user, item = train["p_user"] > 0, train["p_item"] > 0
    if train["p_sub"] > 0:
        return ABLATION[4] if user and item else None
    return ABLATION[int(user) + 2 * int(item)]  # none, user only, item only, both


def load_results(path: str | Path) -> dict[str, dict[str, Any]]:
    """The records of `ml1m_results.json`, by run name."""
    return json.loads(Path(path).read_text())


def runs_table(results: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per run: group, settings, best epoch, validation and test metrics, machine."""
    rows = {}
    for name, r in results.items():
        train, model, best, full = r["train"], r["model"], r["best"], r.get("full_test", {})
        rows[name] = {
            "group": r.get("group", ""), "model": model_name(train, model), "dropouts": dropouts_name(model),
            "seed": r["seed"], "loss": train["loss"], "p_user": train["p_user"], "p_item": train["p_item"],
            "p_sub": train["p_sub"], "epochs": r["epochs"], "best epoch": best["epoch"],
            "valid NDCG@10": best["valid_ndcg@10"], "test NDCG@10": best["test_ndcg@10"],
            "test HR@10": best["test_hr@10"], "test MRR": best["test_mrr"],
            "full NDCG@10": full.get("ndcg@10"), "full HR@10": full.get("hr@10"), "device": r["device"],
        }
    return pd.DataFrame(rows).T.rename_axis("run")


def ablation_table(results: dict[str, dict[str, Any]], device: str, seed: int = 0, loss: str = "bce") -> pd.DataFrame:
    """The SSE ablation: one row per `ABLATION` setting among the runs on `device` with this seed and loss.

    Refuses a mixed budget: every row must have trained for the same number of epochs.
    """
    table = runs_table(results)
    table = table[(table["device"] == device) & (table["seed"] == seed) & (table["loss"] == loss)]
    rows = {}
    labels = {name: ablation_label(results[name]["train"], results[name]["model"]) for name in table.index}
    for label in ABLATION:
        found = [name for name, own in labels.items() if own == label]
        if len(found) > 1:
            raise ValueError(f"ablation row {label!r} matches several runs: {found}")
        if found:
            rows[label] = table.loc[found[0]].drop(["group", "model", "dropouts", "device"])
            rows[label]["run"] = found[0]
    frame = pd.DataFrame(rows).T.rename_axis("setting")
    if frame["epochs"].nunique() > 1:
        raise ValueError(f"ablation rows trained for different budgets: {sorted(frame['epochs'].unique())}")
    return frame


def machine_label(device: str) -> str:
    """A short name for a recorded device: "cuda (NVIDIA H200)" -> "H200", "cpu (2 cores, ...)" -> "CPU"."""
    if device.startswith("cuda (") and device.endswith(")"):
        return device[len("cuda ("):-1].removeprefix("NVIDIA ").strip()
    return device.split(" (")[0].upper()


def curve_runs(table: pd.DataFrame, group: str | None = None, device: str | None = None,
               seed: int | None = None) -> dict[str, str]:
    """Runs of `runs_table` to draw as learning curves, by label: those whose group starts with `group`, on
    `device`, with `seed` (None: any). The label names what differs: model, seed and machine for a group
    across machines ("SSE-PT s0 H200"), the run's own name without its machine and seed otherwise ("ce")."""
    rows = table
    if group is not None:
        rows = rows[rows["group"].str.startswith(group)]
    if device is not None:
        rows = rows[rows["device"] == device]
    if seed is not None:
        rows = rows[rows["seed"] == seed]
    if device is None:
        return {f"{r['model']} s{r['seed']} {machine_label(r['device'])}": name for name, r in rows.iterrows()}
    return {str(name).rsplit("_", 2)[0]: name for name in rows.index}


#: The benchmarks notebook 04 shows: each ran alone on its machine (docs/speed.md); the earlier CPU ones, which
#: shared theirs, are kept in artifacts/ and told in docs/log.md.
CURRENT_BENCHMARKS = ("bench_cpu_idle.json", "bench_cpu_idle_1thread.json", "bench_h200.json",
                      "bench_h200_compile.json")
#: Measurements of a benchmark run shown in the speed table, with their column titles.
SPEED_COLUMNS = {"epoch_seconds": "training epoch (s)", "eval_sampled_seconds": "evaluation, sampled (s)",
                 "eval_full_seconds": "evaluation, full (s)", "peak_gpu_mb": "peak GPU memory (MB)"}


def speed_label(bench: dict[str, Any]) -> str:
    """Which machine and threads a benchmark ran on, and when: e.g. "AMD EPYC, 2 torch threads, 2026-11-29"."""
    m, day = bench["machine"], bench["date"][:10]
    if m["device"].startswith("cuda"):
        return f"{machine_label(m['device'])}, {day}"
    threads = m["device"].split(", ")[-1].rstrip(")")
    return f"{m['processor']}, {threads}, {day}"


def speed_table(benchmarks: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per (machine, configuration) of `python -m helpers.studies.bench` records, with the
    `SPEED_COLUMNS` a record has (a column none of them has is left out; a missing value stays empty)."""
    rows = {(speed_label(bench), name): {title: run.get(key) for key, title in SPEED_COLUMNS.items()}
            for bench in benchmarks.values() for name, run in bench["runs"].items()}
    table = pd.DataFrame(rows).T.rename_axis(["machine", "configuration"]).astype(float)
    return table.dropna(axis=1, how="all")


def candidates_table(record: dict[str, Any]) -> pd.DataFrame:
    """The best-run candidates of a GPU session (`helpers.studies.candidates` record): what each changed against
    the paper setting, its epochs, the epoch validation picked, and that epoch's test metrics (sampled and full)."""
    rows = {}
    for run in record["runs"]:
        changed = ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in run["differs_from_faithful"].items())
        rows[run["run"]] = {"changed": changed, "epochs": run["epochs_reached"], "best epoch": run["best_epoch"],
                            "valid NDCG@10": run["valid_sampled_ndcg@10"], "test NDCG@10": run["sampled_ndcg@10"],
                            "test HR@10": run["sampled_hr@10"], "full NDCG@10": run["full_ndcg@10"],
                            "full HR@10": run["full_hr@10"]}
    return pd.DataFrame(rows).T.rename_axis("run").sort_values("valid NDCG@10", ascending=False)


def ml1m_curve_groups(table: pd.DataFrame, study_device: str) -> dict[str, dict[str, str]]:
    """The recorded ML-1M runs of `runs_table` to draw as learning curves, in panels of at most four runs (title ->
    {label: run}): the runs of each `COMPARISON_GROUPS` recipe on each machine (model and seed), then the study
    device's seed-0 runs: the SSE ablation with BCE (one SSE part at a time, SSE-PT last) and the best-run
    candidates (SSE-PT and SSE-PT++, each with BCE and with CE). SSE-SASRec's seed-0 run on the study device is in
    its machine's paper-setting panel."""
    groups: dict[str, dict[str, str]] = {}
    for recipe in COMPARISON_GROUPS:
        for label, name in curve_runs(table, group=recipe).items():
            model_seed, machine = label.rsplit(" ", 1)
            groups.setdefault(f"{recipe}, {machine}", {})[model_seed] = name
    seed0 = table[(table["device"] == study_device) & (table["seed"] == 0) & (table["model"] == "SSE-PT")]
    ablation, candidates = {}, {}
    for name, row in seed0.iterrows():
        label = ablation_label({k: row[k] for k in ("p_user", "p_item", "p_sub")}, {"user_dim": 1})
        if row["loss"] == "bce" and label in ABLATION[:4]:
            ablation[label] = str(name)
        if label in ABLATION[3:5]:
            candidates[f"{'SSE-PT++' if label == ABLATION[4] else 'SSE-PT'}, {str(row['loss']).upper()}"] = str(name)
    machine = machine_label(study_device)
    groups[f"SSE ablation, {machine}, seed 0 (BCE)"] = {k: ablation[k] for k in ABLATION[:4] if k in ablation}
    order = [f"{model}, {loss}" for model in ("SSE-PT", "SSE-PT++") for loss in ("BCE", "CE")]
    groups[f"best-run candidates, {machine}, seed 0"] = {k: candidates[k] for k in order if k in candidates}
    def compares(title: str) -> bool:
        return title.startswith(COMPARISON_GROUPS)

    return {title: dict(sorted(runs.items())) if compares(title) else runs
            for title, runs in sorted(groups.items(), key=lambda item: not compares(item[0])) if runs}


#: The transfer study's setups in panels of a figure (title -> setups), at most five a panel: SSE-PT and SSE-SASRec
#: with BCE, then CE with and without the copy bonus (tests/test_results.py checks they cover every setup).
TRANSFER_GROUPS: dict[str, tuple[str, ...]] = {
    "SSE-PT, BCE": ("scratch", "fine-tune", "frozen", "low-lr"),
    "SSE-SASRec, BCE": ("sasrec-scratch", "sasrec-fine-tune"),
    "CE, without and with the copy bonus": ("sasrec-scratch-ce", "sasrec-fine-tune-ce", "fine-tune-ce",
                                            "sasrec-scratch-ce-copy", "fine-tune-ce-copy"),
}


def recorded_runs_shown(results: dict[str, dict[str, Any]], folder: str | Path) -> list[RunShown]:
    """What the run record says about each recorded ML-1M run (`session.run_shown`), from its history in `folder`
    (`ml1m_history_NAME.csv`): a run trained to a cap of the paper's 200 epochs without patience is on the paper's
    fixed budget."""
    shown = []
    for name, record in results.items():
        history = pd.read_csv(Path(folder) / f"ml1m_history_{name}.csv")
        cap, patience = int(record["train"]["epochs"]), int(record["train"].get("patience") or 0)
        stop = "patience" if patience and int(history["epoch"].max()) < cap else "budget"
        shown.append(run_shown(name, history, cap, stop, "paper" if cap == PAPER_EPOCHS and not patience else None))
    return shown


def study_runs_shown(name: str, frame: pd.DataFrame) -> list[RunShown | str]:
    """The trained runs of a study table (columns setup, fraction, seed, epochs_run, epoch_cap, best_epoch,
    stop_reason, as `transfer.run_study` writes them) for the run record: one line for all of them when patience
    stopped every one (`outputs.runs_line`), else one `RunShown` each (without a tail gain: the table has none)."""
    models = frame[frame["kind"] == "model"]
    runs = [RunShown(f"{r.setup} {r.fraction:.0%} s{r.seed}", int(r.epochs_run), int(r.epoch_cap), int(r.best_epoch),
                     "patience" if r.stop_reason == "patience" else "budget") for r in models.itertuples()]
    return [runs_line(name, runs)] if runs and all(r.stop == "patience" for r in runs) else list(runs)


def comparison_lines(table: pd.DataFrame) -> list[str]:
    """One line per comparison group of `runs_table` rows (`COMPARISON_GROUPS`): each model's mean test NDCG@10
    (sampled and full) over its seeds, and on how many seeds SSE-PT is ahead of the baseline on both protocols."""
    lines = []
    for group in sorted(g for g in table["group"].unique() if g.startswith(COMPARISON_GROUPS)):
        runs = table[table["group"] == group]
        means = runs.groupby("model")[["test NDCG@10", "full NDCG@10"]].mean()
        others = [m for m in means.index if m != "SSE-PT"]
        if "SSE-PT" not in means.index or len(others) != 1:
            continue
        other = others[0]
        by_seed = runs.pivot_table(index="seed", columns="model", values=["test NDCG@10", "full NDCG@10"])
        ahead = int(((by_seed["test NDCG@10"]["SSE-PT"] > by_seed["test NDCG@10"][other])
                     & (by_seed["full NDCG@10"]["SSE-PT"] > by_seed["full NDCG@10"][other])).sum())
        machine = machine_label(runs["device"].iloc[0])
        where = group if machine.lower() in group.lower() else f"{group} ({machine})"
        lines.append(f"{where}: SSE-PT {means.loc['SSE-PT', 'test NDCG@10']:.4f} sampled / "
                     f"{means.loc['SSE-PT', 'full NDCG@10']:.4f} full NDCG@10 against {other} "
                     f"{means.loc[other, 'test NDCG@10']:.4f} / {means.loc[other, 'full NDCG@10']:.4f} (mean of "
                     f"{len(by_seed)} seeds); SSE-PT ahead on both protocols on {ahead} of {len(by_seed)} seeds")
    return lines


def ablation_lines(ablation: pd.DataFrame) -> list[str]:
    """What the SSE ablation (`ablation_table`) shows, in lines: each row's test NDCG@10 against no SSE."""
    if "no SSE" not in ablation.index:
        return []
    base = float(ablation.loc["no SSE", "test NDCG@10"])
    parts = ", ".join(f"{label} {float(row['test NDCG@10']) - base:+.4f}" for label, row in ablation.iterrows()
                      if label != "no SSE")
    return [f"SSE ablation: test NDCG@10 (sampled) {base:.4f} without SSE; against it: {parts}"]


def transfer_lines(summary: pd.DataFrame, metric: str = "fullkeep_ndcg@10",
                   label: str = "NDCG@10 (full ranking, history kept)") -> list[str]:
    """For the smallest and the largest share of training users of the Wiki1000 study (`transfer.summarize`
    rows), the best setup by the mean of `metric` (called `label`) and the best baseline beside it."""
    lines = []
    column = f"{metric}_mean"
    for fraction in sorted({summary["fraction"].min(), summary["fraction"].max()}):
        rows = summary[summary["fraction"] == fraction].set_index("setup")[column]
        baselines = rows[[s in ("popularity", "repeat-last", "most-frequent") for s in rows.index]]
        models = rows.drop(baselines.index)
        best, base = models.idxmax(), baselines.idxmax()
        lines.append(f"Wiki1000, {fraction:.0%} of the training users: best setup {best} {models[best]:.3f} "
                     f"{label} against the best baseline ({base}) {baselines[base]:.3f}")
    return lines
