"""Figures the notebooks show. Each function draws on a given (or new) axes and returns it; the `*_panels`
functions draw a whole figure, one panel per group of runs or setups, and return the figure.

Two rules keep every figure readable: a legend never covers data (it sits beside or below the axes), and a
panel holds at most `MAX_PER_PANEL` runs or setups (each a pair of lines, validation and test, or a bundle of
seeds in one colour) besides the grey baselines; more than that raises, and the caller splits them into panels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from helpers.baselines import BASELINE_NAMES
from helpers.data import SequenceData, item_popularity, stats

#: Colours of the runs or setups of one panel, in the order given (the baselines are grey).
PALETTE = plt.get_cmap("tab10").colors
#: The most runs or setups one panel draws, besides the baselines.
MAX_PER_PANEL = 5
#: Baselines are references, not contenders: grey, told apart by line style.
BASELINE_COLOUR = "0.45"
LINE_STYLES = (":", "--", "-.")


def _colours(names: Sequence[str]) -> dict[str, tuple[float, ...] | str]:
    """One colour per name: grey for the baselines, the palette in the order given for the others (so a
    setup keeps its colour whether or not the baselines are drawn, and in every figure of the same groups)."""
    others = [n for n in dict.fromkeys(names) if n not in BASELINE_NAMES]
    colours: dict[str, tuple[float, ...] | str] = {n: BASELINE_COLOUR for n in BASELINE_NAMES}
    return colours | {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(others)}


def _baseline_style(name: str) -> str:
    return LINE_STYLES[BASELINE_NAMES.index(name) % len(LINE_STYLES)] if name in BASELINE_NAMES else "--"


def _check_panel(what: str, count: int) -> None:
    if count > MAX_PER_PANEL:
        raise ValueError(f"{count} {what} in one panel, more than a reader can tell apart (at most {MAX_PER_PANEL}); "
                         "split them into groups, one panel each")


def legend_beside(ax: Axes) -> None:
    """The legend to the right of the axes, outside them, so it covers no data."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def legend_below(ax: Axes, ncol: int = 2) -> None:
    """The legend under the axes (and their x label), outside them, so it covers no data."""
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), borderaxespad=0.0, ncol=ncol)


def _axes(ax: Axes | None) -> Axes:
    return ax if ax is not None else plt.subplots(figsize=(5, 3.5), layout="constrained")[1]


def _grid(rows: int, cols: int, width: float, height: float, sharey: str | bool = False) -> tuple[Figure, np.ndarray]:
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), sharey=sharey, squeeze=False,
                             layout="constrained")
    return fig, axes


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
    """Validation (solid) and test (dashed) `metric` per run against `epoch` or `elapsed` seconds, one colour
    per run (at most `MAX_PER_PANEL` runs), grey lines for `baselines`; the legend beside the axes."""
    _check_panel("runs", len(histories))
    ax = _axes(ax)
    for i, (name, hist) in enumerate(histories.items()):
        rows = hist.dropna(subset=[f"valid_{metric}"])
        ax.plot(rows[x], rows[f"valid_{metric}"], "-o", color=PALETTE[i], markersize=2.5, label=f"{name} valid")
        ax.plot(rows[x], rows[f"test_{metric}"], "--", color=PALETTE[i], label=f"{name} test")
    for j, (name, value) in enumerate((baselines or {}).items()):
        ax.axhline(value, color=BASELINE_COLOUR, linestyle=LINE_STYLES[j % 3], linewidth=1, label=name)
    ax.set(xlabel="seconds (training and evaluation)" if x == "elapsed" else x, ylabel=metric.upper())
    legend_beside(ax)
    return ax


def learning_curve_panels(
    groups: Mapping[str, dict[str, pd.DataFrame]], metric: str = "ndcg@10", x: str = "epoch", cols: int = 2,
    ylim: tuple[float, float] | None = None, baselines: dict[str, float] | None = None,
) -> Figure:
    """`learning_curves`, one panel per group (title: the group's name), `cols` panels a row, one y scale."""
    rows = -(-len(groups) // cols)
    fig, axes = _grid(rows, cols, 6.2, 3.4, sharey=True)
    for ax, (title, histories) in zip(axes.flat, groups.items()):
        learning_curves(histories, metric, x, ax, baselines)
        ax.set_title(title, fontsize=10)
        ax.yaxis.set_tick_params(labelleft=True)
        if ylim:
            ax.set_ylim(*ylim)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    return fig


def attention_heatmap(weights: np.ndarray, labels: Sequence[str], title: str, ax: Axes | None = None) -> Axes:
    """Heat map of one attention matrix (queries x keys) with item labels."""
    ax = ax if ax is not None else plt.subplots(figsize=(6, 5))[1]
    image = ax.imshow(weights, cmap="viridis", vmin=0)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.set(xlabel="attended position (key)", ylabel="position (query)", title=title)
    plt.colorbar(image, ax=ax, fraction=0.046)
    return ax


def _groups(names: Sequence[str], groups: Mapping[str, Sequence[str]] | None) -> dict[str, list[str]]:
    """`groups` restricted to `names` (in each group's order), empty groups dropped; None: one group of all."""
    present = [n for n in dict.fromkeys(names) if n not in BASELINE_NAMES]
    if groups is None:
        return {"": present}
    missing = [n for n in present if not any(n in members for members in groups.values())]
    if missing:
        raise ValueError(f"setups in no group: {missing}")
    chosen = {title: [n for n in members if n in present] for title, members in groups.items()}
    return {title: members for title, members in chosen.items() if members}


def fraction_curves(summary: pd.DataFrame, metric: str, ax: Axes | None = None,
                    setups: Sequence[str] | None = None, legend: bool = True) -> Axes:
    """Mean +- std of `metric` against the training fraction: one coloured line per setup of `setups` (default:
    every setup in `summary`, at most `MAX_PER_PANEL`), and the baselines in grey.

    `summary` has columns setup, fraction, `{metric}_mean` and `{metric}_std`.
    """
    ax = _axes(ax)
    names = summary["setup"].astype(str)
    chosen = list(setups) if setups is not None else [n for n in dict.fromkeys(names) if n not in BASELINE_NAMES]
    _check_panel("setups", len(chosen))
    colours = _colours(chosen)
    for setup in [*[b for b in BASELINE_NAMES if b in set(names)], *chosen]:
        rows = summary[names == setup].sort_values("fraction")
        baseline = setup in BASELINE_NAMES
        ax.errorbar(rows["fraction"] * 100, rows[f"{metric}_mean"], yerr=None if baseline else
                    rows[f"{metric}_std"].fillna(0), marker=None if baseline else "o", markersize=4, capsize=3,
                    label=setup, color=colours[setup], linestyle=_baseline_style(setup) if baseline else "-",
                    linewidth=1.2 if baseline else 1.6)
    ax.set(xscale="log", xlabel="training users (%)", ylabel=metric.upper())
    ax.set_xticks([10, 25, 50, 100], ["10", "25", "50", "100"])
    if legend:
        legend_beside(ax)
    return ax


def fraction_panels(summary: pd.DataFrame, metrics: Mapping[str, str],
                    groups: Mapping[str, Sequence[str]] | None = None) -> Figure:
    """`fraction_curves` as a grid: one row per metric (`metrics`: column -> row title), one column per group of
    setups (`groups`: title -> setups; every setup of `summary` must be in one), the baselines in every panel, one
    y scale per row, and one legend under each column."""
    columns = _groups(summary["setup"].astype(str).tolist(), groups)
    fig, axes = _grid(len(metrics), len(columns), 4.0, 3.0, sharey="row")
    for r, (metric, row_title) in enumerate(metrics.items()):
        for c, (title, setups) in enumerate(columns.items()):
            ax = axes[r, c]
            fraction_curves(summary, metric, ax, setups, legend=False)
            ax.set_title(f"{row_title}\n{title}" if title else row_title, fontsize=9)
            if c:
                ax.set_ylabel("")
            if r < len(metrics) - 1:
                ax.set_xlabel("")
    for c in range(len(columns)):
        legend_below(axes[-1, c])
    return fig


def validation_curves(curves: pd.DataFrame, metric: str, ax: Axes | None = None,
                      baselines: dict[str, float] | None = None, setups: Sequence[str] | None = None,
                      legend: bool = True) -> Axes:
    """Validation `metric` against epochs, one colour per setup of `setups` (default: all, at most
    `MAX_PER_PANEL`) and one thin line per seed (`curves` as `transfer.validation_curves` gives them, for one
    fraction), with grey horizontal lines for `baselines`."""
    ax = _axes(ax)
    names = curves["setup"].astype(str)
    chosen = list(setups) if setups is not None else list(dict.fromkeys(names))
    _check_panel("setups", len(chosen))
    colours = _colours(chosen)
    for setup in chosen:
        for j, (_, run) in enumerate(curves[names == setup].groupby("seed")):
            ax.plot(run["epoch"], run[metric], color=colours[setup], linewidth=1, alpha=0.85,
                    label=setup if j == 0 else None)
    for j, (name, value) in enumerate((baselines or {}).items()):
        ax.axhline(value, color=BASELINE_COLOUR, linestyle=LINE_STYLES[j % 3], linewidth=1, label=name)
    ax.set(xlabel="epoch", ylabel=metric.upper())
    if legend:
        legend_beside(ax)
    return ax


def validation_panels(curves: pd.DataFrame, metric: str, fractions: Sequence[float],
                      groups: Mapping[str, Sequence[str]] | None = None) -> Figure:
    """`validation_curves` as a grid: one row per training fraction, one column per group of setups (as in
    `fraction_panels`), one y scale per row, one legend under each column."""
    columns = _groups(curves["setup"].astype(str).tolist(), groups)
    fig, axes = _grid(len(fractions), len(columns), 4.0, 2.8, sharey="row")
    for r, fraction in enumerate(fractions):
        rows = curves[np.isclose(curves["fraction"], fraction)]
        for c, (title, setups) in enumerate(columns.items()):
            ax = axes[r, c]
            validation_curves(rows, metric, ax, setups=setups, legend=False)
            ax.set_title(f"{fraction:.0%} of the training users" + (f"\n{title}" if title else ""), fontsize=9)
            if c:
                ax.set_ylabel("")
            if r < len(fractions) - 1:
                ax.set_xlabel("")
    for c in range(len(columns)):
        legend_below(axes[-1, c], ncol=1)
    return fig


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
