"""Figures the notebooks show. Each function draws on a given (or new) axes and returns it; the `*_panels`
functions draw a whole figure, one panel per group of runs or setups, and return the figure.

Rules that keep every figure readable: a legend never covers data (it sits beside or below the axes); a
panel holds at most `MAX_PER_PANEL` runs or setups (each a pair of lines, validation and test, or a bundle of
seeds in one colour) besides the grey baselines, more than that raises and the caller splits them into panels;
a run or setup keeps one colour in every panel of a figure, and no two share one; axes are labelled in words
(`metric_label`), not column names; and where the results lie in a narrow band the y axis shows that band,
naming the baselines that lie far outside it instead of stretching the axis to them (`_band`).
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

#: Colours of the runs or setups of a figure, in the order given (the baselines are grey, so no grey here):
#: tab10's nine colours, then the five dark ones of tab20b (light ones vanish beside the others on thin lines).
PALETTE = tuple(c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7) + tuple(
    plt.get_cmap("tab20b").colors[i] for i in (0, 4, 8, 12, 16))
#: The most runs or setups one panel draws, besides the baselines.
MAX_PER_PANEL = 5
#: Baselines are references, not contenders: grey, told apart by line style.
BASELINE_COLOUR = "0.45"
LINE_STYLES = (":", "--", "-.")


#: Words for the parts of a metric's column name (`transfer.evaluate_all`, `fit`'s history).
METRIC_WORDS = {"ndcg@10": "NDCG@10", "hr@10": "HR@10", "mrr": "MRR"}
PROTOCOL_WORDS = {"sampled": "sampled 1 + 100", "full": "full ranking", "fullkeep": "full ranking, history kept"}
SUBSET_WORDS = {"repeat": "repeated targets", "unseen": "never-seen targets"}
SPLIT_WORDS = {"valid": "validation", "test": "test"}


def metric_label(column: str, short: bool = False) -> str:
    """An axis label in words for a metric column: "fullkeep_ndcg@10" -> "NDCG@10 (full ranking, history kept)",
    "valid_ndcg@10" -> "validation NDCG@10", "unseen_fullkeep_ndcg@10" -> "NDCG@10 (never-seen targets, full
    ranking, history kept)"; `short`: without the part in brackets (for panels whose titles say it); a name it does
    not know comes back unchanged."""
    parts = column.split("_")
    metric = METRIC_WORDS.get(parts[-1])
    if metric is None:
        return column
    split = [SPLIT_WORDS[p] for p in parts[:-1] if p in SPLIT_WORDS]
    rest = [SUBSET_WORDS.get(p) or PROTOCOL_WORDS.get(p) for p in parts[:-1] if p not in SPLIT_WORDS]
    if None in rest:
        return column
    return " ".join([*split, metric]) + (f" ({', '.join(rest)})" if rest and not short else "")


def _band(values: Sequence[float], references: Mapping[str, float], margin: float = 0.5
          ) -> tuple[tuple[float, float], dict[str, float]]:
    """The y limits that show `values` (the results), and the `references` (baselines) that lie too far outside
    them to share the axis: more than `margin` times the results' span below or above them. Those are left off
    the axis (the caller names them), so that a narrow band of results is not squeezed against a far baseline."""
    finite = [float(v) for v in values if np.isfinite(v)]
    if not finite:
        return (0.0, 1.0), {}
    low, high = min(finite), max(finite)
    span = max(high - low, 0.02 * max(abs(high), 1e-3))
    near = (low - margin * span, high + margin * span)
    off = {n: v for n, v in references.items() if np.isfinite(v) and not near[0] <= v <= near[1]}
    shown = finite + [v for n, v in references.items() if n not in off and np.isfinite(v)]
    low, high = min(shown), max(shown)
    pad = 0.06 * max(high - low, span)
    return (low - pad, high + pad), off


def _name_off_axis(ax: Axes, off: Mapping[str, float]) -> None:
    """Say on the axes which baselines lie off them, and where (below or above the band)."""
    if not off:
        return
    low, high = ax.get_ylim()
    text = "; ".join(f"{n} {v:.3f} ({'below' if v < low else 'above'} the axis)" for n, v in off.items())
    ax.text(0.99, 0.02 if all(v < low for v in off.values()) else 0.98, text, transform=ax.transAxes, ha="right",
            va="bottom" if all(v < low for v in off.values()) else "top", fontsize=6.5, color=BASELINE_COLOUR)


def _colours(names: Sequence[str]) -> dict[str, tuple[float, ...] | str]:
    """One colour per name: grey for the baselines, the palette in the order given for the others (so a
    setup keeps its colour whether or not the baselines are drawn, and in every panel of a figure when the
    figure passes all its names at once)."""
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
    baselines: dict[str, float] | None = None, colours: Mapping[str, object] | None = None, legend: bool = True,
) -> Axes:
    """Validation (solid) and test (dashed) `metric` per run against `epoch` or `elapsed` seconds, one colour
    per run (at most `MAX_PER_PANEL` runs; `colours` by run name, default the palette in order), grey lines for
    `baselines`; the legend beside the axes."""
    _check_panel("runs", len(histories))
    ax = _axes(ax)
    colours = colours or _colours(list(histories))
    for name, hist in histories.items():
        rows = hist.dropna(subset=[f"valid_{metric}"])
        ax.plot(rows[x], rows[f"valid_{metric}"], "-o", color=colours[name], markersize=2.5, label=f"{name} valid")
        ax.plot(rows[x], rows[f"test_{metric}"], "--", color=colours[name], label=f"{name} test")
    for j, (name, value) in enumerate((baselines or {}).items()):
        ax.axhline(value, color=BASELINE_COLOUR, linestyle=LINE_STYLES[j % 3], linewidth=1, label=name)
    ax.set(xlabel="seconds (training and evaluation)" if x == "elapsed" else x, ylabel=METRIC_WORDS.get(metric, metric))
    if legend:
        legend_beside(ax)
    return ax


def learning_curve_panels(
    groups: Mapping[str, dict[str, pd.DataFrame]], metric: str = "ndcg@10", x: str = "epoch", cols: int = 2,
    ylim: tuple[float, float] | None = None, baselines: dict[str, float] | None = None,
) -> Figure:
    """`learning_curves`, one panel per group (title: the group's name), `cols` panels a row, one y scale; a run
    label keeps one colour in every panel, and no two labels share one."""
    rows = -(-len(groups) // cols)
    fig, axes = _grid(rows, cols, 6.2, 3.4, sharey=True)
    colours = _colours([label for histories in groups.values() for label in histories])
    for ax, (title, histories) in zip(axes.flat, groups.items()):
        learning_curves(histories, metric, x, ax, baselines, colours)
        ax.set_title(title, fontsize=10)
        ax.yaxis.set_tick_params(labelleft=True)
        if ylim:
            ax.set_ylim(*ylim)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    return fig


#: Item labels of the attention heat map longer than this are cut, with an ellipsis.
LABEL_CHARS = 32


def _short(label: str, chars: int = LABEL_CHARS) -> str:
    return label if len(label) <= chars else label[: chars - 1].rstrip() + "…"


def attention_heatmap(weights: np.ndarray, labels: Sequence[str], title: str, ax: Axes | None = None,
                      window: int | None = None) -> Axes:
    """Heat map of one attention matrix (queries x keys) with item labels (cut to `LABEL_CHARS`), in a figure large
    enough for them, and a labelled colour bar. `window`: the model's whole input window when the matrix shows only
    its last positions; the title then says so (and that each row's rest went to the earlier positions)."""
    n = len(labels)
    if ax is None:
        side = max(5.0, 0.3 * n + 2.5)
        ax = plt.subplots(figsize=(side + 1.2, side), layout="constrained")[1]
    image = ax.imshow(weights, cmap="viridis", vmin=0)
    short = [_short(str(label)) for label in labels]
    ax.set_xticks(range(n), short, rotation=90, fontsize=7.5)
    ax.set_yticks(range(n), short, fontsize=7.5)
    if window is not None and window > n:
        title = f"{title}\nonly the last {n} of the {window} input positions are shown"
    ax.set(xlabel="attended position (key)", ylabel="position (query)")
    ax.set_title(title, fontsize=10)
    bar = plt.colorbar(image, ax=ax, fraction=0.046)
    bar.set_label("attention weight (each row sums to 1 over the whole window)" if window and window > n
                  else "attention weight (each row sums to 1)")
    return ax


def _figure_names(names: Sequence[str], groups: Mapping[str, Sequence[str]] | None) -> list[str]:
    """Every setup a figure of these `groups` can show, in the groups' order (the names present when there are no
    groups), so that its colours are the same in every figure of the same groups."""
    if groups is None:
        return [n for n in dict.fromkeys(names) if n not in BASELINE_NAMES]
    return list(dict.fromkeys(n for members in groups.values() for n in members))


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


def _fraction_band(summary: pd.DataFrame, metric: str, setups: Sequence[str]
                   ) -> tuple[tuple[float, float], dict[str, float]]:
    """`_band` of `fraction_curves`: the setups' means +- std against the baselines' levels."""
    names = summary["setup"].astype(str)
    rows = summary[names.isin(list(setups))]
    std = rows[f"{metric}_std"].fillna(0)
    values = [*(rows[f"{metric}_mean"] - std), *(rows[f"{metric}_mean"] + std)]
    references = {b: float(summary.loc[names == b, f"{metric}_mean"].mean()) for b in BASELINE_NAMES
                  if (names == b).any()}
    return _band(values, references)


def fraction_curves(summary: pd.DataFrame, metric: str, ax: Axes | None = None,
                    setups: Sequence[str] | None = None, legend: bool = True,
                    colours: Mapping[str, object] | None = None,
                    band: tuple[tuple[float, float], dict[str, float]] | None = None, short_label: bool = False
                    ) -> Axes:
    """Mean +- std of `metric` against the training fraction: one coloured line per setup of `setups` (default:
    every setup in `summary`, at most `MAX_PER_PANEL`; `colours` by setup, default the palette in order), and
    the baselines in grey; `short_label`: the y label without the protocol (for a panel whose title gives it).
    The y axis shows the setups' band (`band`: limits and the baselines left off the axis,
    default `_band` of this panel); a baseline far outside it is named on the axes instead of drawn.

    `summary` has columns setup, fraction, `{metric}_mean` and `{metric}_std`.
    """
    ax = _axes(ax)
    names = summary["setup"].astype(str)
    chosen = list(setups) if setups is not None else [n for n in dict.fromkeys(names) if n not in BASELINE_NAMES]
    _check_panel("setups", len(chosen))
    colours = colours or _colours(chosen)
    (low, high), off = band or _fraction_band(summary, metric, chosen)
    for setup in [*[b for b in BASELINE_NAMES if b in set(names) and b not in off], *chosen]:
        rows = summary[names == setup].sort_values("fraction")
        baseline = setup in BASELINE_NAMES
        ax.errorbar(rows["fraction"] * 100, rows[f"{metric}_mean"], yerr=None if baseline else
                    rows[f"{metric}_std"].fillna(0), marker=None if baseline else "o", markersize=4, capsize=3,
                    label=setup, color=colours[setup], linestyle=_baseline_style(setup) if baseline else "-",
                    linewidth=1.2 if baseline else 1.6)
    ax.set(xscale="log", xlabel="training users (%)", ylabel=metric_label(metric, short_label), ylim=(low, high))
    ax.set_xticks([10, 25, 50, 100], ["10", "25", "50", "100"])
    _name_off_axis(ax, off)
    if legend:
        legend_beside(ax)
    return ax


def fraction_panels(summary: pd.DataFrame, metrics: Mapping[str, str],
                    groups: Mapping[str, Sequence[str]] | None = None) -> Figure:
    """`fraction_curves` as a grid: one row per metric (`metrics`: column -> row title), one column per group of
    setups (`groups`: title -> setups; every setup of `summary` must be in one), the baselines in every panel, one
    y scale per row (the band of that row's setups), one colour per setup in the whole figure, and one legend under
    each column."""
    columns = _groups(summary["setup"].astype(str).tolist(), groups)
    colours = _colours(_figure_names(summary["setup"].astype(str).tolist(), groups))
    fig, axes = _grid(len(metrics), len(columns), 4.0, 3.0, sharey="row")
    everyone = [s for setups in columns.values() for s in setups]
    for r, (metric, row_title) in enumerate(metrics.items()):
        band = _fraction_band(summary, metric, everyone)
        for c, (title, setups) in enumerate(columns.items()):
            ax = axes[r, c]
            fraction_curves(summary, metric, ax, setups, legend=False, colours=colours, band=band, short_label=True)
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
                      legend: bool = True, colours: Mapping[str, object] | None = None) -> Axes:
    """Validation `metric` against epochs, one colour per setup of `setups` (default: all, at most
    `MAX_PER_PANEL`) and one thin line per seed (`curves` as `transfer.validation_curves` gives them, for one
    fraction), with grey horizontal lines for `baselines`."""
    ax = _axes(ax)
    names = curves["setup"].astype(str)
    chosen = list(setups) if setups is not None else list(dict.fromkeys(names))
    _check_panel("setups", len(chosen))
    colours = colours or _colours(chosen)
    for setup in chosen:
        for j, (_, run) in enumerate(curves[names == setup].groupby("seed")):
            ax.plot(run["epoch"], run[metric], color=colours[setup], linewidth=1, alpha=0.85,
                    label=setup if j == 0 else None)
    for j, (name, value) in enumerate((baselines or {}).items()):
        ax.axhline(value, color=BASELINE_COLOUR, linestyle=LINE_STYLES[j % 3], linewidth=1, label=name)
    ax.set(xlabel="epoch", ylabel=metric_label(metric))
    if legend:
        legend_beside(ax)
    return ax


def validation_panels(curves: pd.DataFrame, metric: str, fractions: Sequence[float],
                      groups: Mapping[str, Sequence[str]] | None = None) -> Figure:
    """`validation_curves` as a grid: one row per training fraction, one column per group of setups (as in
    `fraction_panels`, and in the same colours), one y scale per row, one legend under each column."""
    columns = _groups(curves["setup"].astype(str).tolist(), groups)
    colours = _colours(_figure_names(curves["setup"].astype(str).tolist(), groups))
    fig, axes = _grid(len(fractions), len(columns), 4.0, 2.8, sharey="row")
    for r, fraction in enumerate(fractions):
        rows = curves[np.isclose(curves["fraction"], fraction)]
        for c, (title, setups) in enumerate(columns.items()):
            ax = axes[r, c]
            validation_curves(rows, metric, ax, setups=setups, legend=False, colours=colours)
            ax.set_title(f"{fraction:.0%} of the training users" + (f"\n{title}" if title else ""), fontsize=9)
            if c:
                ax.set_ylabel("")
            if r < len(fractions) - 1:
                ax.set_xlabel("")
    for c in range(len(columns)):
        legend_below(axes[-1, c], ncol=1)
    return fig


def metric_bars(table: pd.DataFrame, columns: Sequence[str], title: str, ax: Axes | None = None,
                xlabel: str | None = None, ylabel: str | None = None) -> Axes:
    """One group per row of `table`, one mark per column, values labelled; the rows named by `ylabel` (default:
    the table's index name) and the values by `xlabel` (default: none, the legend names the columns).

    Bars from 0 where the values spread over much of [0, their largest]; where they lie in a narrow band (their
    span under half the largest value) dots on an axis of that band instead, since a bar's length would then say
    nothing (and an axis that does not start at 0 must not carry bars)."""
    ax = ax if ax is not None else plt.subplots(figsize=(7, 0.6 * len(table) + 1.2), layout="constrained")[1]
    values = table[list(columns)].astype(float).to_numpy()
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    narrow = high > 0 and high - low < 0.5 * high
    height = 0.8 / len(columns)
    rows = np.arange(len(table))
    for j, column in enumerate(columns):
        place = rows + j * height
        if narrow:
            ax.plot(values[:, j], place, "o", color=PALETTE[j], markersize=6, label=column)
            for y, v in zip(place, values[:, j]):
                ax.annotate(f"{v:.4f}", (v, y), xytext=(5, 0), textcoords="offset points", va="center", fontsize=7)
        else:
            bars = ax.barh(place, values[:, j], height, label=column, color=PALETTE[j])
            ax.bar_label(bars, labels=[f"{v:.4f}" for v in values[:, j]], fontsize=7, padding=2)
    ax.set_yticks(rows + height * (len(columns) - 1) / 2, list(table.index))
    ax.invert_yaxis()
    span = high - low
    ax.set(title=title, xlim=(low - 0.08 * span, high + 0.22 * span) if narrow else (0, high * 1.18))
    if narrow:
        ax.grid(axis="x", linewidth=0.5, alpha=0.5)
    ax.set_xlabel(xlabel or "")
    ax.set_ylabel(ylabel if ylabel is not None else (table.index.name or ""))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the marks, never over them
    return ax


#: Words for the rows of `stats_table` (the keys of `helpers.data.stats`), and how each is written.
STATS_ROWS = {
    "users": ("users", "count"), "items": ("items", "count"), "rows": ("rows (interactions)", "count"),
    "max_user_id": ("largest user id", "count"), "max_item_id": ("largest item id", "count"),
    "mean_len": ("rows per user: mean", "one decimal"), "len_p10": ("rows per user: 10th percentile", "number"),
    "len_p25": ("rows per user: 25th percentile", "number"), "len_p50": ("rows per user: median", "number"),
    "len_p75": ("rows per user: 75th percentile", "number"), "len_p90": ("rows per user: 90th percentile", "number"),
    "len_p99": ("rows per user: 99th percentile", "number"), "max_len": ("rows per user: most", "count"),
    "eval_users": ("users evaluated (3 rows or more)", "count"),
    "repeat_share": ("rows repeating the user's previous item", "percent"),
    "density": ("density (rows / (users x items))", "four decimals"),
}


def _written(value: float, how: str) -> str:
    if how == "count":
        return f"{int(value):,}"
    if how == "percent":
        return f"{value:.1%}"
    if how == "four decimals":
        return f"{value:.4f}"
    if how == "one decimal":
        return f"{value:,.1f}"
    shown = round(float(value), 1)  # a percentile: an integer where it is one to the decimal shown
    return f"{int(shown):,}" if shown == int(shown) else f"{shown:,.1f}"


def stats_table(rows: Sequence[Mapping[str, object]]) -> pd.DataFrame:
    """`helpers.data.stats` of some datasets as a table to read: one column per dataset, one row per statistic
    named in words, counts as integers (6,040, not 6040.000), shares as percentages."""
    columns = {}
    for row in rows:
        columns[str(row["dataset"])] = {label: _written(float(row[key]), how)  # type: ignore[arg-type]
                                        for key, (label, how) in STATS_ROWS.items() if key in row}
    return pd.DataFrame(columns).rename_axis("statistic")
