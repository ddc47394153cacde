"""Figures the notebooks show. Each function draws on a given (or new) axes and returns it."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from helpers.baselines import BASELINE_NAMES
from helpers.data import SequenceData, item_popularity, stats

#: Distinct colours for up to 20 lines (the transfer study draws 14: setups and baselines).
PALETTE = plt.get_cmap("tab20").colors


def _colours(names: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """One colour per name, the same in every figure: the baselines first, then the other names in the
    order given (so a setup keeps its colour whether or not the baselines are drawn)."""
    others = [n for n in dict.fromkeys(names) if n not in BASELINE_NAMES]
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate([*BASELINE_NAMES, *others])}


def _axes(ax: Axes | None) -> Axes:
    return ax if ax is not None else plt.subplots(figsize=(5, 3.5))[1]


def length_distribution(datasets: Sequence[SequenceData], ax: Axes | None = None) -> Axes:
    """Histogram of rows per user, log-spaced bins and log counts."""
    ax = _axes(ax)
    top = max(int(d.lengths.max()) for d in datasets)
    bins = np.unique(np.logspace(0, np.log10(top + 1), 40).astype(int))
    for d in datasets:
        lengths = d.lengths[d.lengths > 0]
        ax.hist(lengths, bins=bins, histtype="step", linewidth=1.5, label=f"{d.name} (median {np.median(lengths):g})")
    ax.set(xscale="log", yscale="log", xlabel="rows per user", ylabel="users", title="User history length")
    ax.legend()
    return ax


def popularity_long_tail(datasets: Sequence[SequenceData], ax: Axes | None = None) -> Axes:
    """Item popularity sorted in decreasing order, as a share of the catalogue (log y)."""
    ax = _axes(ax)
    for d in datasets:
        counts = np.sort(item_popularity(d)[1:])[::-1]
        counts = counts[counts > 0]
        ax.plot(np.linspace(0, 100, counts.size), counts, label=d.name)
    ax.set(yscale="log", xlabel="items, most popular first (% of catalogue)", ylabel="rows",
           title="Item popularity long tail")
    ax.legend()
    return ax


def repeat_share(datasets: Sequence[SequenceData], ax: Axes | None = None) -> Axes:
    """Bar chart of the share of rows that repeat the user's previous item."""
    ax = _axes(ax)
    shares = [stats(d)["repeat_share"] for d in datasets]
    bars = ax.bar([d.name for d in datasets], shares, color=["C0", "C1", "C2"][: len(datasets)])
    ax.bar_label(bars, labels=[f"{s:.1%}" for s in shares])
    ax.set(ylim=(0, 1), ylabel="share of rows", title="Rows repeating the previous item")
    return ax


def learning_curves(
    histories: dict[str, pd.DataFrame], metric: str = "ndcg@10", x: str = "epoch", ax: Axes | None = None,
    baselines: dict[str, float] | None = None,
) -> Axes:
    """Validation (solid) and test (dashed) `metric` per run against `epoch` or `elapsed` seconds."""
    ax = _axes(ax)
    for i, (name, hist) in enumerate(histories.items()):
        rows = hist.dropna(subset=[f"valid_{metric}"])
        ax.plot(rows[x], rows[f"valid_{metric}"], "-o", color=f"C{i}", markersize=3, label=f"{name} valid")
        ax.plot(rows[x], rows[f"test_{metric}"], "--", color=f"C{i}", label=f"{name} test")
    for j, (name, value) in enumerate((baselines or {}).items()):
        ax.axhline(value, color="grey", linestyle=[":", "-.", "--"][j % 3], linewidth=1, label=name)
    ax.set(xlabel="seconds of training" if x == "elapsed" else x, ylabel=metric.upper())
    ax.legend(fontsize=7)
    return ax


def attention_heatmap(weights: np.ndarray, labels: Sequence[str], title: str, ax: Axes | None = None) -> Axes:
    """Heat map of one attention matrix (queries x keys) with item labels."""
    ax = ax if ax is not None else plt.subplots(figsize=(6, 5))[1]
    image = ax.imshow(weights, cmap="viridis", vmin=0)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.set(xlabel="attended position (key)", ylabel="position (query)", title=title)
    plt.colorbar(image, ax=ax, fraction=0.046)
    return ax


def fraction_curves(summary: pd.DataFrame, metric: str, ax: Axes | None = None) -> Axes:
    """Mean +- std of `metric` against the training fraction, one line per setup.

    `summary` has columns setup, fraction, `{metric}_mean` and `{metric}_std`.
    """
    ax = _axes(ax)
    colours = _colours(summary["setup"].astype(str).tolist())
    for setup, rows in summary.groupby("setup", sort=False, observed=True):
        rows = rows.sort_values("fraction")
        ax.errorbar(rows["fraction"] * 100, rows[f"{metric}_mean"], yerr=rows[f"{metric}_std"].fillna(0),
                    marker="o", capsize=3, label=setup, color=colours[str(setup)],
                    linestyle="--" if setup in BASELINE_NAMES else "-")
    ax.set(xscale="log", xlabel="training users (%)", ylabel=metric.upper())
    ax.set_xticks([10, 25, 50, 100], ["10", "25", "50", "100"])
    ax.legend(fontsize=7)
    return ax


def validation_curves(curves: pd.DataFrame, metric: str, ax: Axes | None = None,
                      baselines: dict[str, float] | None = None) -> Axes:
    """Validation `metric` against epochs, one colour per setup and one thin line per seed (`curves` as
    `transfer.validation_curves` gives them, for one fraction), with horizontal lines for `baselines`."""
    ax = _axes(ax)
    colours = _colours(curves["setup"].astype(str).tolist())
    for setup, rows in curves.groupby("setup", sort=False):
        for j, (_, run) in enumerate(rows.groupby("seed")):
            ax.plot(run["epoch"], run[metric], color=colours[str(setup)], linewidth=1, alpha=0.8,
                    label=setup if j == 0 else None)
    for j, (name, value) in enumerate((baselines or {}).items()):
        ax.axhline(value, color="grey", linestyle=[":", "-.", "--"][j % 3], linewidth=1, label=name)
    ax.set(xlabel="epoch", ylabel=metric.upper())
    ax.legend(fontsize=7)
    return ax


def metric_bars(table: pd.DataFrame, columns: Sequence[str], title: str, ax: Axes | None = None) -> Axes:
    """Grouped horizontal bars: one group per row of `table`, one bar per column, values labelled."""
    ax = ax if ax is not None else plt.subplots(figsize=(7, 0.6 * len(table) + 1))[1]
    height = 0.8 / len(columns)
    rows = np.arange(len(table))
    for j, column in enumerate(columns):
        values = table[column].astype(float).to_numpy()
        bars = ax.barh(rows + j * height, values, height, label=column)
        ax.bar_label(bars, labels=[f"{v:.4f}" for v in values], fontsize=7, padding=2)
    ax.set_yticks(rows + height * (len(columns) - 1) / 2, list(table.index))
    ax.invert_yaxis()
    ax.set(title=title, xlim=(0, float(table[list(columns)].astype(float).to_numpy().max()) * 1.18))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    return ax
