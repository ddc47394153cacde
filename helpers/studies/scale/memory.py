"""Full CE's memory, predicted before it runs: the peak of the same point trained with BCE plus a number of
(positions x items) float32 arrays. The benchmark measures that number (`ce_factor`) on the first CE point that
fits and skips the points predicted not to fit (`ce_skip`); docs/scale.md ("Full CE, predicted before it runs")
compares the prediction with the measurements."""

from __future__ import annotations

from typing import Any

from helpers.studies.records import available_mb
from helpers.studies.scale.plans import Point
from helpers.studies.synthetic import Shape

#: How many (positions x items) float32 arrays full CE holds at its peak (logits, their softmax for the
#: gradient, the gradient) until the benchmark has measured it.
CE_FACTOR_PRIOR = 4.0
#: Share of the memory available now that a point may be predicted to use.
MEMORY_HEADROOM = 0.8


def predict_ce_mb(base_peak_mb: float, positions: int, n_items: int, factor: float) -> float:
    """Predicted peak (MB) of full CE: the BCE run's peak plus `factor` float32 (positions x items) arrays."""
    return base_peak_mb + factor * positions * n_items * 4 / 2**20


def ce_factor(ce_peak_mb: float, base_peak_mb: float, positions: int, n_items: int) -> float:
    """How many (positions x items) float32 arrays full CE's peak held beyond BCE's (the measured factor)."""
    return (ce_peak_mb - base_peak_mb) * 2**20 / (positions * n_items * 4)


def ce_skip(point: Point, shape: Shape, records: list[dict[str, Any]]) -> str | None:
    """Why a full-CE point would not fit in memory (predicted from the records so far), or None to run it."""
    if point.loss != "ce" or point.mode != "train":
        return None
    same = [r for r in records if r.get("point", {}).get("loss") == "bce" and "phase_peak_rss_mb" in r
            and r["point"]["shape"] == point.shape and r["point"]["items"] == point.items
            and r["point"]["maxlen"] == point.maxlen and r["point"]["procs"] == point.procs]
    if not same:
        return None
    base = same[0]
    factors = [r["ce_factor"] for r in records if "ce_factor" in r]
    factor = factors[0] if factors else CE_FACTOR_PRIOR
    predicted = predict_ce_mb(base["phase_peak_rss_mb"], base["max_piece_positions"], shape.n_items, factor)
    limit = MEMORY_HEADROOM * available_mb() / point.procs
    if predicted > limit:
        return (f"full CE predicted to peak at {predicted:,.0f} MB per process "
                f"(BCE's {base['phase_peak_rss_mb']:,.0f} MB "
                f"+ {factor:.2f} x {base['max_piece_positions']:,} positions x {shape.n_items:,} items x 4 bytes), "
                f"above {MEMORY_HEADROOM:.0%} of the {available_mb():,.0f} MB available")
    return None


def add_ce_factor(record: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """For a measured full-CE point, how many logits-sized arrays its peak held beyond the same BCE point's."""
    point = record["point"]
    if point["loss"] != "ce" or "peak_rss_mb" not in record:
        return
    for r in records:
        p = r["point"]
        if ("peak_rss_mb" in r and p["loss"] == "bce" and p["mode"] == "train"
                and all(p[k] == point[k] for k in ("shape", "items", "users", "maxlen", "procs", "threads"))):
            n_items = record["shape"]["n_items"]
            record["ce_factor"] = ce_factor(record["phase_peak_rss_mb"], r["phase_peak_rss_mb"],
                                            record["max_piece_positions"],
                                            n_items)
            record["ce_factor_base"] = r["label"]
            return
