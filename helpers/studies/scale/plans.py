"""What the scale benchmark measures: one configuration (`Point`), its dataset shape, and the plans (lists of
points) that `python -m helpers.studies.scale bench --plan NAME` runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from helpers.studies.synthetic import SHAPES, Shape


@dataclass
class Point:
    """One configuration of the benchmark, measured in its own process."""

    shape: str = "ml-20m"  # a name of SHAPES
    users: int = 0  # > 0: another number of users (rows scale with them, the mean length kept)
    items: int = 0  # > 0: another number of items (users and rows kept)
    mode: str = "train"  # "train" (timed batches) or "eval" (full ranking of a sample of users)
    loss: str = "bce"  # a loss of helpers.settings.LOSSES
    negatives: int = 0  # sampled softmax: negatives per position (R)
    sampling: str = ""  # sampled softmax: "uniform" or "popularity"
    model: str = "sse-sasrec"  # model family (SASRec with item SSE), under the paper recipe
    maxlen: int = 200
    batch_size: int = 128
    procs: int = 1  # processes (2: torchrun, gloo)
    threads: int = 1  # torch threads per process
    warmup: int = 3  # batches before the timed ones
    batches: int = 20  # timed batches (training)
    rounds: int = 1  # times the same timed batches are trained; the fastest round counts
    eval_users: int = 512  # users whose full ranking is timed (mode "eval")

    @property
    def label(self) -> str:
        """A short readable name of the configuration (it names the point's record files)."""
        loss = self.loss if not self.negatives else f"ss{self.negatives}-{self.sampling[:3]}"
        size = f"{self.shape}" + (f"-u{self.users}" if self.users else "") + (f"-i{self.items}" if self.items else "")
        what = "eval-full" if self.mode == "eval" else loss
        return f"{size} {what} L{self.maxlen} {self.procs}p{self.threads}t"


def point_shape(point: Point) -> Shape:
    """The dataset shape of a point: a named shape, with users or items changed."""
    shape = SHAPES[point.shape]
    if point.users:
        rows = round(shape.n_rows * point.users / shape.n_users)
        shape = replace(shape, n_users=point.users, n_rows=max(rows, point.users * shape.min_len, shape.n_items))
    if point.items:
        rows = max(shape.n_rows, point.items) if shape.every_item else shape.n_rows
        shape = replace(shape, n_items=point.items, n_rows=rows)
    return shape


def train_settings(point: Point) -> dict[str, Any]:
    """The training settings a point overrides (the loss and, for sampled softmax, its negatives)."""
    extra: dict[str, Any] = {"loss": point.loss}
    if point.negatives:
        extra.update(negatives=point.negatives, negative_sampling=point.sampling)
    return extra


SS = {"loss": "sampled-softmax", "negatives": 256}


def _points(**common: Any) -> Callable[..., Point]:
    return lambda **kw: Point(**{**common, **kw})


def plan(name: str) -> list[Point]:
    """The points of a plan, most important first (a run stopped early keeps the first ones).

    - `recorded`: what docs/scale.md reports: the losses on the ML-20M shape and the 1M-item catalogue with
      1 process x 1 thread, 1 x 2 and 2 x 1, evaluation at both, then growth with users, items and maxlen.
    - `layouts`: its first six points (BCE and sampled softmax, three process layouts), to repeat them alone.
    - `tiny`: the same kinds of point on a small shape, for the tests and a dry run.
    """
    if name == "tiny":
        p = _points(shape="tiny", batches=2, warmup=1, batch_size=16, maxlen=20, eval_users=20)
        return [p(), p(**{**SS, "negatives": 8}, sampling="uniform"), p(loss="ce"), p(procs=2),
                p(mode="eval"), p(items=400), p(users=100), p(maxlen=10)]
    if name not in ("recorded", "layouts"):
        raise ValueError(f"unknown plan {name!r}; choose 'recorded', 'layouts' or 'tiny'")
    m = _points(shape="ml-20m", batches=5, warmup=2, rounds=3)
    one = _points(shape="1m-items", batches=5, warmup=2, rounds=3)
    uni, pop = {**SS, "sampling": "uniform"}, {**SS, "sampling": "popularity"}
    layouts = [{"threads": 2}, {"procs": 2}, {"threads": 1}]
    points = [m(**lay) for lay in layouts]
    points += [m(**uni, **lay) for lay in layouts]
    if name == "layouts":  # the process layouts alone, to repeat them when the machine is quieter
        return points
    # One thread per process from here on: on a shared machine two OpenMP threads in one process wait for each
    # other at every operation (docs/scale.md, "Process layouts on two cores"), while single-threaded processes
    # slow down only in proportion.
    points += [m(**pop, threads=1), m(**pop, procs=2)]
    points += [m(loss="ce", threads=1, batches=2, warmup=1), m(loss="ce", procs=2, batches=2, warmup=1)]
    points += [one(threads=1), one(**uni, threads=1), one(**pop, threads=1), one(**uni, procs=2),
               one(loss="ce", threads=1, batches=2, warmup=1)]
    points += [one(mode="eval", threads=1, eval_users=512), m(mode="eval", threads=1, eval_users=2048)]
    base = SHAPES["ml-20m"]
    points += [m(users=u, threads=1) for u in (base.n_users // 8, base.n_users // 2)]
    points += [m(items=i, threads=1, **kw) for i in (100_000, 300_000, 1_000_000) for kw in ({}, uni)]
    points += [m(maxlen=L, threads=1) for L in (50, 100, 400)]
    points += [m(items=100_000, loss="ce", threads=1, batches=2, warmup=1)]
    return points
