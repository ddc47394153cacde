"""The scale benchmark's report: its records as Markdown tables (`markdown`, for docs/scale.md) and the figure
`artifacts/figures/scale.png` (`figure`: epoch time by loss and process layout, growth with the catalogue, the
window and the users, and the ML-1M loss comparison's quality against its cost)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers.studies.synthetic import SHAPES


def _measured(result: dict[str, Any], **match: Any) -> list[dict[str, Any]]:
    """The measured records whose point matches every `match` item."""
    return [r for r in result["points"] if "peak_rss_mb" in r and all(r["point"][k] == v for k, v in match.items())]


def _legend_below(ax: Any, ncol: int = 2) -> None:
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=ncol, fontsize=8, frameon=False)


def figure(result: dict[str, Any], losses: pd.DataFrame | None, path: Path) -> Path:
    """`draw`'s figure saved to `path` (PNG)."""
    import matplotlib.pyplot as plt

    fig = draw(result, losses)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw(result: dict[str, Any], losses: pd.DataFrame | None) -> Any:
    """The scale figure: epoch time by loss and process layout (log scale), then, with one thread, core-seconds
    per batch and the training peak against the catalogue, maxlen and users, and the ML-1M loss comparison
    (quality against seconds per epoch, each point named beside it). Legends sit below their panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 9.5), constrained_layout=True)
    kinds = {"BCE": {"loss": "bce"}, "SS uniform": {"loss": "sampled-softmax", "sampling": "uniform"},
             "SS popularity": {"loss": "sampled-softmax", "sampling": "popularity"}, "full CE": {"loss": "ce"}}
    shared = any(point.get("busy_before") for point in result["points"])  # other work ran beside some point
    layouts = {"1 process x 1 thread": (1, 1), "2 processes x 1 thread (torchrun)": (2, 1),
               "1 process x 2 threads" + (" (collapses when shared)" if shared else ""): (1, 2)}
    ax = axes[0, 0]
    width = 0.8 / len(layouts)
    for j, (name, (procs, threads)) in enumerate(layouts.items()):
        heights = []
        for match in kinds.values():
            found = _measured(result, shape="ml-20m", mode="train", users=0, items=0, maxlen=200, procs=procs,
                              threads=threads, **match)
            heights.append(found[0]["epoch_seconds_extrapolated"] / 60 if found else np.nan)
        bars = ax.bar(np.arange(len(kinds)) + (j - 1) * width, heights, width, label=name)
        ax.bar_label(bars, labels=["" if np.isnan(h) else f"{h:.1f}" for h in heights], fontsize=7)
    ax.set_xticks(np.arange(len(kinds)), list(kinds))
    ax.set(yscale="log", ylabel="minutes per epoch (extrapolated, wall)",
           title="ML-20M shape: one epoch, SASRec, maxlen 200")
    _legend_below(ax, ncol=1)

    one = {"procs": 1, "threads": 1, "mode": "train"}
    growth = {"BCE": {"loss": "bce"}, "sampled softmax R=256": {"loss": "sampled-softmax", "sampling": "uniform"},
              "full CE": {"loss": "ce"}}
    base_items = SHAPES["ml-20m"].n_items
    for ax, key, label, title in (
            (axes[0, 1], "cpu_seconds_per_batch", "core-seconds per batch of 128", "Catalogue: time per batch"),
            (axes[0, 2], "phase_peak_rss_mb", "peak resident MB while training", "Catalogue: memory")):
        for name, match in growth.items():
            rows = sorted((r["shape"]["n_items"], r[key]) for r in _measured(
                result, shape="ml-20m", users=0, maxlen=200, **one, **match))
            if rows:
                ax.plot(*zip(*rows), "o-", label=name)
        ax.set(xscale="log", yscale="log" if key.startswith("cpu") else "linear",
               xlabel=f"items (ML-20M's users and rows; {base_items:,} = ML-20M)", ylabel=label, title=title)
        ticks = [base_items, 100_000, 300_000, 1_000_000]
        ax.set_xticks(ticks, [f"{t / 1000:.0f}k" if t < 1_000_000 else "1M" for t in ticks])
        ax.minorticks_off()
        if not key.startswith("cpu"):
            ax.set_ylim(bottom=0)
        _legend_below(ax)

    for ax, field, xlabel, title in (
            (axes[1, 0], "maxlen", "maxlen (window)", "Window length (ML-20M shape, BCE)"),
            (axes[1, 1], "users", "users (ML-20M's items, mean length kept)", "Users (BCE)")):
        match = {"items": 0, "loss": "bce", **one}
        match.update({"users": 0} if field == "maxlen" else {"maxlen": 200})
        found = _measured(result, shape="ml-20m", **match)
        if field == "maxlen":
            rows = sorted((r["point"]["maxlen"], r["cpu_seconds_per_batch"], r["phase_peak_rss_mb"]) for r in found)
            ylabel = "core-seconds per batch of 128"
        else:
            rows = sorted((r["shape"]["n_users"], r["cpu_seconds_per_sequence"] * r["train_users"] / 60,
                           r["phase_peak_rss_mb"]) for r in found)
            ylabel = "core-minutes per epoch (extrapolated)"
        if rows:
            xs, ys, peaks = zip(*rows)
            ax.plot(xs, ys, "o-", color="C0", label=ylabel)
            twin = ax.twinx()
            twin.plot(xs, peaks, "s--", color="C1", label="peak MB while training (right axis)")
            twin.set_ylabel("peak resident MB while training")
            twin.set_ylim(0, max(peaks) * 1.15)
            ax.set_ylim(0, max(ys) * 1.15)
            handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
            ax.legend(handles, [h.get_label() for h in handles], loc="upper center", bbox_to_anchor=(0.5, -0.18),
                      ncol=1, fontsize=8, frameon=False)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)

    ax = axes[1, 2]
    if losses is not None and not losses.empty:
        # One point per loss: the mean over seeds, bars from the lowest to the highest seed; the fastest seed's
        # time (another job on the machine only ever slows a run down).
        by = losses.groupby("variant", sort=False)
        for i, (variant, runs) in enumerate(by):
            y = runs["test_full_ndcg@10"]
            ax.errorbar(runs["seconds_per_epoch"].min(), y.mean(), yerr=[[y.mean() - y.min()], [y.max() - y.mean()]],
                        fmt="o", color=f"C{i}", capsize=3, label=f"{variant} ({len(runs)} seed{'s' * (len(runs) > 1)})")
        ax.margins(x=0.1, y=0.1)
        _legend_below(ax, ncol=2)
        ax.set(xlabel="s per epoch (1 thread, 2 runs at once; fastest seed)",
               ylabel="test NDCG@10, full ranking (mean, min-max)",
               title=f"ML-1M, SASRec, {int(losses['epochs_done'].max())} epochs: loss vs cost")
    else:
        ax.set_axis_off()
    fig.suptitle(f"How the cost grows: {result['machine']['cpu']} (2 cores, {'shared' if shared else 'idle'}), "
                 f"torch {result['machine']['torch']}"
                 "; time in core-seconds unless marked wall", fontsize=11)
    return fig


def markdown(result: dict[str, Any]) -> str:
    """The benchmark's records as Markdown tables (training, evaluation, skipped), for docs/scale.md."""
    train, evals, other = [], [], []
    for r in result["points"]:
        p, label = r["point"], r["label"]
        busy = sum(1 for b in r.get("busy_before", []) if b["nice"] < 10)
        if "skipped" in r or "error" in r:
            other.append(f"| {label} | {r.get('skipped') or r.get('error')} |")
        elif p["mode"] == "eval":
            evals.append(f"| {label} | {r['eval_users_timed']:,} | {r['eval_seconds_per_user'] * 1e3:.1f} | "
                         f"{r['eval_cpu_seconds_per_user'] * 1e3:.1f} | {r['eval_seconds_extrapolated'] / 60:.1f} | "
                         f"{r['phase_peak_rss_mb']:,.0f} | {r['load_before'][0]:.1f} / {busy} |")
        else:
            peaks = " + ".join(f"{x:,.0f}" for x in r["phase_peak_rss_mb_per_rank"])
            train.append(f"| {label} | {r['seconds_per_batch']:.3f} | {r['cpu_seconds_per_batch']:.3f} | "
                         f"{r['sequences_per_s']:,.0f} | {r['epoch_seconds_extrapolated'] / 60:.1f} | "
                         f"{peaks} | {r['load_before'][0]:.1f} / {busy} |")
    lines = ["| point | s / batch (fastest round) | core-s / batch | sequences / s | epoch, min (extrapolated) | "
             "training peak MB (per process) | load 1 min / other busy processes |", "|---|---|---|---|---|---|---|",
             *train]
    if evals:
        lines += ["", "| point | users timed | ms / user | core-ms / user | all users, min (extrapolated) | "
                  "peak MB | load / busy |", "|---|---|---|---|---|---|---|", *evals]
    if other:
        lines += ["", "| point | not measured |", "|---|---|", *other]
    return "\n".join(lines)
