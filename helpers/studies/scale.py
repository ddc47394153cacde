"""How the cost grows (issue 23, part 3): synthetic data at scale and a benchmark of one point per process.

- **Synthetic data** (`Shape`, `synthesize`): users with log-normal lengths above a minimum (the total is
  exact), items drawn from a Zipf-like popularity `p(rank k) ~ k^-exponent`, every item id present at least
  once (one row of each is placed first), item id = popularity rank (1 the most popular). Items are drawn
  independently, so a user may meet an item twice (MovieLens has no repeats); the cost does not depend on it.
  Seeded: the same shape and seed give the same data. Written as a `user item` file
  (`python -m helpers.studies.scale make`) that `python -m helpers.train --dataset FILE` reads, or cached as
  `.npz` for the benchmark (loads in a second, so its peak memory is training's, not the text parser's).
- **One point** (`run_point`): one configuration (shape, loss, negatives, maxlen, threads) in its own process,
  timing `batches` training batches after `warmup` ones (an epoch is extrapolated from them and labelled so),
  or a full-ranking evaluation of a sample of users; it reports the process's peak resident memory
  (`getrusage`). Under `torchrun` every rank reports its own.
- **The benchmark** (`python -m helpers.studies.scale bench --plan NAME`): every point of a plan, each in a
  fresh subprocess (so peaks do not mix), with the machine, the date, torch and the load average beside each
  row, into a JSON file that is rewritten after each point. Full CE is run only where its predicted memory
  fits (`predict_ce_mb`).

- **The ML-1M loss comparison** (`losses commands|table`): the training commands of `LOSS_VARIANTS` and the table
  of their runs (test NDCG@10 / HR@10 under both protocols at the epoch picked by validation).
- **Acceptance checks** (`accept --name N -- COMMAND`): a command's wall time, peak memory and printed result.
- `markdown` prints the benchmark's tables; `figure` draws `artifacts/figures/scale.png`.

It is a benchmark, never a test: timings are noisy. `docs/scale.md` reads the recorded results;
`scripts/scale.sh` and `scripts/loss_compare.sh` run what it records.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers.data import SequenceData, leave_one_out, pairs_to_sequences, stats
from helpers.data import load as load_dataset
from helpers.utils import REPO_ROOT, atomic_write, cpu_name, run_cli

#: Where the benchmark caches its synthetic datasets (`.npz`) and writes its per-point files; the
#: benchmark hands it to the processes it starts through this environment variable.
CACHE_ENV = "SSEPT_SCALE_CACHE"
CACHE = Path(os.environ.get(CACHE_ENV) or REPO_ROOT / "runs" / "scale")


# --------------------------------------------------------------------------- synthetic data


@dataclass(frozen=True)
class Shape:
    """The size and form of a synthetic dataset."""

    name: str
    n_users: int
    n_items: int
    n_rows: int
    min_len: int = 20  # every user has at least this many rows (MovieLens-20M keeps users with >= 20 ratings)
    sigma: float = 1.3  # log-normal spread of the lengths above min_len (median/mean = exp(-sigma^2 / 2))
    exponent: float = 0.8  # Zipf-like popularity: the item of rank k is drawn with weight k^-exponent (ZIPF_NOTE)
    every_item: bool = True  # place one row of each item first, so every item id occurs at least once
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_users < 1 or self.n_items < 1:
            raise ValueError(f"{self.name}: users and items must be at least 1")
        if self.n_rows < self.n_users * self.min_len:
            raise ValueError(f"{self.name}: {self.n_rows} rows cannot give {self.n_users} users {self.min_len} each")
        if self.every_item and self.n_rows < self.n_items:
            raise ValueError(f"{self.name}: {self.n_rows} rows cannot hold each of {self.n_items} items once")

    @property
    def key(self) -> str:
        """A file name that names every setting (the cache key)."""
        return (f"{self.name}-u{self.n_users}-i{self.n_items}-r{self.n_rows}-m{self.min_len}"
                f"-s{self.sigma:g}-z{self.exponent:g}{'' if self.every_item else '-some'}-seed{self.seed}")


#: Why 0.8: no single exponent fits a real catalogue. ML-1M's rank-count curve has a log-log slope of -0.25
#: over its 100 most rated movies and -1.3 from rank 100 on (measured here); 0.8, between them, is also what
#: the speed benchmark's synthetic set uses (helpers.studies.bench), so the two are comparable.
ZIPF_NOTE = "p(item of popularity rank k) ~ k^-0.8"

#: MovieLens-20M's size (138,493 users, 27,278 movies, 20,000,263 ratings: the dataset's README), and a
#: catalogue of 1,000,000 item ids with 10,000 users and 1,000,000 rows (100 per user, at least 20). The
#: cost of a step depends on the catalogue (tables, Adam, scoring), not on the users, so few users keep a
#: full-ranking evaluation of all of them (a million scores each, valid and test) to minutes on 2 cores.
#: Items are not forced to occur (`every_item=False`): as in a shop, many ids are never bought (about
#: a third occur at least once; `describe` counts them), and the long tail is the Zipf draw's alone.
SHAPES = {
    "ml-20m": Shape("ml-20m", 138_493, 27_278, 20_000_263, min_len=20),
    "1m-items": Shape("1m-items", 10_000, 1_000_000, 1_000_000, min_len=20, every_item=False),
    # the acceptance check's file: the same catalogue, 2,000 users, so that the command line's evaluation of
    # every user (valid and test, a million scores each) fits the time a shared 2-core machine gives it
    "1m-items-2k-users": Shape("1m-items-2k-users", 2_000, 1_000_000, 200_000, min_len=20, every_item=False),
}


def user_lengths(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Rows per user: `min_len` plus log-normal shares of the rest, summing exactly to `n_rows`."""
    extra_total = shape.n_rows - shape.n_users * shape.min_len
    weights = rng.lognormal(0.0, shape.sigma, shape.n_users)
    extra = np.floor(extra_total * weights / weights.sum()).astype(np.int64)
    short = extra_total - int(extra.sum())  # fewer than n_users rows lost to rounding: one more each
    extra[rng.choice(shape.n_users, size=short, replace=False)] += 1
    return shape.min_len + extra


def zipf_items(n_items: int, exponent: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` item ids in 1..n_items, id k drawn with probability proportional to k^-exponent."""
    cdf = np.cumsum(np.arange(1, n_items + 1, dtype=np.float64) ** -exponent)
    return np.minimum(np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right"), n_items - 1) + 1


def synthesize(shape: Shape) -> SequenceData:
    """The seeded synthetic dataset of `shape` (see the module docstring)."""
    rng = np.random.default_rng(shape.seed)
    lengths = user_lengths(shape, rng)
    items = zipf_items(shape.n_items, shape.exponent, shape.n_rows, rng)
    if shape.every_item:  # one row of each item, at random rows
        every = rng.choice(shape.n_rows, size=shape.n_items, replace=False)
        items[every] = rng.permutation(np.arange(1, shape.n_items + 1))
    else:  # the largest id once, so that a file of these rows has a catalogue of n_items ids
        items[rng.integers(shape.n_rows)] = shape.n_items
    users = np.repeat(np.arange(1, shape.n_users + 1), lengths)
    return pairs_to_sequences(users, items, shape.key)


def write_pairs(data: SequenceData, path: str | Path) -> Path:
    """Write `data` as `user item` lines (the format `helpers.data.load` reads), atomically."""
    users = np.repeat(np.arange(data.n_users + 1), data.lengths[: data.n_users + 1])
    frame = pd.DataFrame({"user": users, "item": data.items})
    return atomic_write(Path(path), lambda f: frame.to_csv(f, sep=" ", header=False, index=False))


def cached(shape: Shape, folder: Path | None = None) -> SequenceData:
    """`synthesize(shape)`, kept as `.npz` in `folder` (default: `CACHE`/data) after the first call."""
    folder = folder if folder is not None else CACHE / "data"
    path = folder / f"{shape.key}.npz"
    if not path.exists():
        data = synthesize(shape)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: np.savez(f, offsets=data.offsets, items=data.items))
    with np.load(path) as stored:
        offsets, items = stored["offsets"], stored["items"]
    return SequenceData(shape.key, shape.n_users, shape.n_items, offsets, items)


def describe(data: SequenceData) -> dict[str, Any]:
    """What the benchmark records about a dataset: `helpers.data.stats` and the top item's share."""
    row = stats(data)
    counts = np.bincount(data.items, minlength=data.n_items + 1)[1:]
    row["top_item_share"] = float(counts.max() / data.n_rows)
    row["items_seen_once"] = int((counts == 1).sum())
    row["item_ids_never_seen"] = int((counts == 0).sum())
    return row


# --------------------------------------------------------------------------- machine and memory


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident memory of this process now (MB), from /proc/self/statm (0 where there is none)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak() -> bool:
    """Start the kernel's peak-RSS count (VmHWM) again from the current RSS; False where Linux does not allow it.
    `getrusage`'s peak is never reset, so the peak of a phase (training after setting up) is read from VmHWM."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def phase_peak_mb() -> float:
    """VmHWM (MB): the peak RSS since the last `reset_peak` (since the start where it never ran); 0 if unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def available_mb() -> float:
    """Memory the kernel says is available now (MB), from /proc/meminfo (inf where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("inf")


def machine() -> dict[str, Any]:
    """The machine a record was made on."""
    import torch

    return {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "torch": torch.__version__, "python": platform.python_version()}


def busy_processes(seconds: float = 0.5, threshold: float = 10.0) -> list[dict[str, Any]]:
    """Other processes using more than `threshold` % of a core over `seconds`, with their nice value
    (empty where psutil is missing): what shared the machine while a point ran."""
    try:
        import psutil
    except ImportError:
        return []
    me = os.getpid()
    procs = [p for p in psutil.process_iter(["pid", "nice", "cmdline"]) if p.info["pid"] != me]
    for p in procs:
        with _quiet_psutil(psutil):
            p.cpu_percent(None)
    time.sleep(seconds)
    busy = []
    for p in procs:
        with _quiet_psutil(psutil):
            used = p.cpu_percent(None)
            if used > threshold:
                busy.append({"pid": p.info["pid"], "nice": p.info["nice"], "cpu_percent": round(used),
                             "command": " ".join(p.info["cmdline"] or [])[:100]})
    return busy


class _quiet_psutil:  # noqa: N801 - a context manager used like a function
    """Ignore processes that end or hide while they are looked at."""

    def __init__(self, psutil: Any) -> None:
        self.errors = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, *_: Any) -> bool:
        return kind is not None and issubclass(kind, self.errors)


def wait_for_quiet(max_wait: float, nice_below: int = 10, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Wait up to `max_wait` seconds until no busy process runs at a nice value below `nice_below` (processes
    at nice 19 get a few percent of a core against ours); return the busy processes found last."""
    deadline = time.monotonic() + max_wait
    while True:
        busy = busy_processes()
        if not [b for b in busy if b["nice"] < nice_below] or time.monotonic() >= deadline:
            return busy
        log(f"waiting for a quieter machine: {[(b['pid'], b['nice'], b['cpu_percent']) for b in busy]}")
        time.sleep(15)


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")


def write_json(path: Path, value: Any) -> None:
    """`value` as indented JSON at `path`, atomically."""
    text = json.dumps(value, indent=1)
    atomic_write(path, lambda f: f.write(text.encode()))


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


# --------------------------------------------------------------------------- one point


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
    model: str = "sasrec"  # model family, under the faithful recipe
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
        """A short readable name of the configuration."""
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


def _timed_users(split: Any, point: Point, seed: int = 0) -> np.ndarray:
    """The training users of the timed batches: a random sample (representative lengths), fixed by the seed."""
    users = np.flatnonzero(split.train_len >= 2)
    need = (point.warmup + point.batches) * point.batch_size
    rng = np.random.default_rng([seed, 23])
    return rng.choice(users, size=min(need, users.size), replace=False)


def run_point(point: Point) -> dict[str, Any]:
    """Measure one point in this process (one rank of it under torchrun); return its record."""
    import torch

    from helpers.distributed import process_group

    torch.set_num_threads(point.threads)
    with process_group("gloo", torch.device("cpu")) as world:
        return _measure_here(point, world)


def _measure_here(point: Point, world: Any) -> dict[str, Any]:
    """`run_point` inside the process group (`world`: this rank's place in it)."""
    import torch

    from helpers import settings
    from helpers.distributed import wrap
    from helpers.train import training_setup

    t_load = time.perf_counter()
    data = cached(point_shape(point))
    split = leave_one_out(data)
    row: dict[str, Any] = {"rank": world.rank, "world": world.size, "threads": torch.get_num_threads(),
                           "load_seconds": time.perf_counter() - t_load, "rss_after_load_mb": current_rss_mb()}
    device = torch.device("cpu")
    model_config = settings.model_config(point.model, data.n_users, data.n_items, "faithful", maxlen=point.maxlen)
    train = settings.train_config(point.model, "faithful", batch_size=point.batch_size, **train_settings(point))
    model, optimizer, sampler, _ = training_setup(split, model_config, train, device, world=world)
    trainee = wrap(model, world, device)
    row["rss_after_setup_mb"] = current_rss_mb()
    row["setup_peak_rss_mb"] = peak_rss_mb()
    row["phase_peak_reset"] = reset_peak()
    row["parameters"] = int(sum(p.numel() for p in model.parameters()))
    trainable = np.flatnonzero(split.train_len >= 2).size
    row["train_users"] = int(trainable)
    row["batches_per_epoch"] = -(-trainable // point.batch_size)
    if point.mode == "eval":
        row.update(_time_eval(split, model, point))
    else:
        row.update(_time_training(split, trainee, optimizer, sampler, train, point, device, world))
    row["peak_rss_mb"] = peak_rss_mb()
    row["measured_phase_peak_rss_mb"] = phase_peak_mb()  # training (or evaluation) alone, model and data included
    return row


def _time_training(split: Any, model: Any, optimizer: Any, sampler: Any, train: Any, point: Point, device: Any,
                   world: Any) -> dict[str, Any]:
    """Seconds of `point.batches` batches after `point.warmup`, `point.rounds` times over the same users; the
    fastest round is the estimate (a noisy neighbour only ever slows a round down), the others are kept.

    Every rank times its share of the same global batches; a rank's batches are recorded as drawn.
    """
    from helpers.sampler import partition_by_length
    from helpers.train import pieces_per_batch, train_epoch

    users = _timed_users(split, point)
    warm, timed = users[: point.warmup * point.batch_size], users[point.warmup * point.batch_size:]
    lengths: list[np.ndarray] = []
    make_batch = sampler.make_batch

    def recording(batch_users: np.ndarray) -> Any:
        batch = make_batch(batch_users)
        lengths.append((batch.pos > 0).sum(axis=1))
        return batch

    sampler.make_batch = recording
    if warm.size:
        sampler.users = np.sort(warm)
        train_epoch(model, sampler, optimizer, train, device, world=world)
    sampler.users = np.sort(timed)
    rss_before = current_rss_mb()
    rounds = []
    for _ in range(point.rounds):
        lengths.clear()
        world.barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        loss = train_epoch(model, sampler, optimizer, train, device, world=world)
        rounds.append((time.perf_counter() - t0, time.process_time() - c0))
    seconds, cpu = min(rounds)
    parts = pieces_per_batch(train, device)
    piece_positions = [int(b[rows].sum()) for b in lengths for rows in partition_by_length(b, parts)]
    n_batches = len(lengths)
    sequences = int(sum(b.size for b in lengths))
    return {
        "timed_batches": n_batches, "timed_sequences": sequences, "timed_seconds": seconds, "timed_cpu_seconds": cpu,
        "round_seconds": [r[0] for r in rounds], "round_cpu_seconds": [r[1] for r in rounds],
        "seconds_per_batch": seconds / max(n_batches, 1), "sequences_per_s": sequences / seconds,
        "positions_per_s": float(sum(b.sum() for b in lengths)) / seconds,
        "pieces_per_batch": parts, "max_piece_positions": max(piece_positions, default=0),
        "loss": loss, "rss_before_timed_mb": rss_before,
    }


def _time_eval(split: Any, model: Any, point: Point) -> dict[str, Any]:
    """Seconds and memory of one full-ranking evaluation of `point.eval_users` users (test split)."""
    from helpers.evaluate import Evaluator

    rng = np.random.default_rng([0, 23])
    sample = np.sort(rng.choice(split.eval_users, size=min(point.eval_users, split.eval_users.size), replace=False))
    warm = Evaluator(split, "test", "full", users=sample[:32])
    warm(model)
    evaluator = Evaluator(split, "test", "full", users=sample)
    t0, c0 = time.perf_counter(), time.process_time()
    metrics = evaluator(model)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"eval_users_timed": int(sample.size), "eval_seconds": seconds, "eval_cpu_seconds": cpu,
            "eval_seconds_per_user": seconds / sample.size, "eval_users_all": int(split.eval_users.size),
            "ndcg@10_untrained": metrics["ndcg@10"]}


# --------------------------------------------------------------------------- full CE's memory

#: Bytes of the (positions x items) float32 logits; full CE holds about `CE_FACTOR` such arrays at its peak
#: (logits, their softmax for the gradient, the gradient): measured by the benchmark (`ce_factor`), this is
#: the prior used until a measurement exists.
CE_FACTOR_PRIOR = 4.0
#: Share of the memory available now that a point may be predicted to use.
MEMORY_HEADROOM = 0.8


def predict_ce_mb(base_peak_mb: float, positions: int, n_items: int, factor: float) -> float:
    """Predicted peak (MB) of full CE: the BCE run's peak plus `factor` float32 (positions x items) arrays."""
    return base_peak_mb + factor * positions * n_items * 4 / 2**20


def ce_factor(ce_peak_mb: float, base_peak_mb: float, positions: int, n_items: int) -> float:
    """How many (positions x items) float32 arrays full CE's peak held beyond BCE's (the measured factor)."""
    return (ce_peak_mb - base_peak_mb) * 2**20 / (positions * n_items * 4)


# --------------------------------------------------------------------------- plans

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
    # other at every operation (docs/scale.md), while single-threaded processes slow down only in proportion.
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


SHAPES["tiny"] = Shape("tiny", 300, 500, 12_000, min_len=5)


# --------------------------------------------------------------------------- the benchmark


def point_command(point: Point, out: Path) -> list[str]:
    """The command that measures `point` in fresh processes (torchrun for more than one)."""
    args = ["-m", "helpers.studies.scale", "point", "--json", json.dumps(asdict(point)), "--out", str(out)]
    if point.procs > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                str(point.procs), *args]
    return [sys.executable, *args]


def measure(point: Point, out_dir: Path, timeout: float, records: list[dict[str, Any]],
            busy: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run `point` in fresh subprocesses; its record, with the machine's load, what else ran, and the command."""
    record: dict[str, Any] = {"label": point.label, "point": asdict(point), "date": _now(),
                              "load_before": load_average(), "busy_before": busy if busy is not None else []}
    shape = point_shape(point)
    record["shape"] = asdict(shape)
    skip = _ce_skip(point, shape, records)
    if skip:
        return {**record, "skipped": skip}
    out = out_dir / f"{point.label.replace(' ', '_')}.json"
    for old in out_dir.glob(f"{out.stem}*.json"):
        old.unlink()
    command = point_command(point, out)
    record["command"] = shlex.join(["python", *command[1:]])
    env = {**os.environ, "OMP_NUM_THREADS": str(point.threads), "MKL_NUM_THREADS": str(point.threads),
           CACHE_ENV: str(CACHE)}
    t0 = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        return {**record, "error": f"timed out after {timeout:.0f} s"}
    record["wall_seconds"] = time.perf_counter() - t0
    record["load_after"] = load_average()
    if done.returncode:
        return {**record, "error": f"exit {done.returncode}: {done.stderr.strip()[-1500:]}"}
    ranks = [json.loads(p.read_text()) for p in sorted(out_dir.glob(f"{out.stem}.rank*.json"))]
    record["ranks"] = ranks
    record.update(summarize_ranks(ranks, point))
    return record


def _ce_skip(point: Point, shape: Shape, records: list[dict[str, Any]]) -> str | None:
    """Why a full-CE point would not fit in memory (predicted), or None to run it."""
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


def summarize_ranks(ranks: list[dict[str, Any]], point: Point) -> dict[str, Any]:
    """The record's headline numbers from its ranks: the epoch extrapolated from the timed batches, and so on."""
    first = ranks[0]
    out: dict[str, Any] = {"peak_rss_mb": max(r["peak_rss_mb"] for r in ranks),
                           "peak_rss_mb_per_rank": [r["peak_rss_mb"] for r in ranks],
                           "phase_peak_rss_mb": max(r["measured_phase_peak_rss_mb"] for r in ranks),
                           "phase_peak_rss_mb_per_rank": [r["measured_phase_peak_rss_mb"] for r in ranks],
                           "setup_peak_rss_mb": max(r["setup_peak_rss_mb"] for r in ranks),
                           "rss_after_setup_mb": first["rss_after_setup_mb"], "parameters": first["parameters"],
                           "train_users": first["train_users"], "threads_per_process": first["threads"]}
    if point.mode == "eval":
        per_user = first["eval_seconds_per_user"]
        out.update(eval_seconds_per_user=per_user, eval_cpu_seconds_per_user=first["eval_cpu_seconds"] / first[
                       "eval_users_timed"], eval_users_timed=first["eval_users_timed"],
                   eval_users_all=first["eval_users_all"],
                   eval_seconds_extrapolated=per_user * first["eval_users_all"],
                   note=(f"one full-ranking evaluation (test split) of {first['eval_users_timed']} sampled users, "
                         f"scaled to all {first['eval_users_all']:,} evaluated users "
                         f"(x{first['eval_users_all'] / first['eval_users_timed']:.1f}); "
                         "a training run evaluates valid and test: twice that"))
        return out
    seconds = max(r["timed_seconds"] for r in ranks)  # the slowest rank sets the pace (each rank's fastest round)
    sequences = sum(r["timed_sequences"] for r in ranks)
    batches = first["timed_batches"]
    epoch_batches = first["batches_per_epoch"]
    cpu = sum(r["timed_cpu_seconds"] for r in ranks)  # core-seconds of every rank together
    out.update(timed_batches=batches, timed_seconds=seconds, seconds_per_batch=seconds / max(batches, 1),
               cpu_seconds_per_batch=cpu / max(batches, 1), cpu_seconds_per_sequence=cpu / sequences,
               epoch_cpu_seconds_extrapolated=cpu / sequences * first["train_users"],
               sequences_per_s=sequences / seconds, max_piece_positions=max(r["max_piece_positions"] for r in ranks),
               epoch_seconds_extrapolated=first["train_users"] / (sequences / seconds),
               note=(f"{sequences:,} sequences in {seconds:.2f} s (the fastest of {point.rounds} rounds over the same "
                     f"users) after {point.warmup} warm-up batches; an epoch of "
                     f"{first['train_users']:,} users ({epoch_batches:,} batches of {point.batch_size}) extrapolated "
                     f"as users / (sequences / s)"))
    return out


def bench(points: list[Point], out: Path, timeout: float, log: Callable[[str], None] = print,
          command: str = "", wait_quiet: float = 0.0, resume: bool = False) -> dict[str, Any]:
    """Measure every point in its own processes; write `out` (JSON) after each; return the result.

    With `resume`, the records already in `out` are kept and their points (by label) not measured again,
    unless they failed; each run's command is kept in `commands`."""
    result: dict[str, Any] = {"machine": machine(), "command": command, "started": _now(),
                              "zipf": ZIPF_NOTE, "shapes": {k: asdict(v) for k, v in SHAPES.items()}, "points": []}
    if resume and out.exists():
        before = json.loads(out.read_text())
        result["points"] = [r for r in before["points"] if "error" not in r]
        result["started"] = before.get("started", result["started"])
        result["commands"] = [*before.get("commands", [before.get("command", "")]), command]
    done = {r["label"] for r in result["points"]}
    points = [p for p in points if p.label not in done]
    points_dir = CACHE / "points"
    points_dir.mkdir(parents=True, exist_ok=True)
    for point in points:
        cached(point_shape(point))  # made once, outside the timed processes
        busy = wait_for_quiet(wait_quiet, log=log) if wait_quiet > 0 else busy_processes()
        record = measure(point, points_dir, timeout, result["points"], busy)
        _add_ce_factor(record, result["points"])
        result["points"].append(record)
        write_json(out, result)
        log(_line(record))
    return result


def _add_ce_factor(record: dict[str, Any], records: list[dict[str, Any]]) -> None:
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


def _line(record: dict[str, Any]) -> str:
    """One printed line per measured point."""
    if "skipped" in record or "error" in record:
        return f"{record['label']}: {record.get('skipped') or record.get('error')}"
    if record["point"]["mode"] == "eval":
        return (f"{record['label']}: {record['eval_seconds_per_user'] * 1e3:.1f} ms/user, "
                f"{record['eval_seconds_extrapolated']:.0f} s for all, peak while evaluating "
                f"{record['phase_peak_rss_mb']:.0f} MB, load {record['load_before']}")
    return (f"{record['label']}: {record['seconds_per_batch']:.3f} s/batch ({record['cpu_seconds_per_batch']:.3f} "
            f"core-s), {record['sequences_per_s']:.0f} seq/s, "
            f"epoch ~{record['epoch_seconds_extrapolated']:.0f} s, training peak {record['phase_peak_rss_mb']:.0f} MB "
            f"{record['phase_peak_rss_mb_per_rank']} (process {record['peak_rss_mb']:.0f}), "
            f"load {record['load_before']}")


def table(result: dict[str, Any]) -> pd.DataFrame:
    """One row per measured point: the headline numbers."""
    rows = []
    for r in result["points"]:
        p = r["point"]
        rows.append({"label": r["label"], "mode": p["mode"], "procs": p["procs"], "threads": p["threads"],
                     "s/batch": r.get("seconds_per_batch"), "core-s/batch": r.get("cpu_seconds_per_batch"),
                     "seq/s": r.get("sequences_per_s"),
                     "epoch s (extrapolated)": r.get("epoch_seconds_extrapolated"),
                     "eval s (extrapolated)": r.get("eval_seconds_extrapolated"),
                     "phase peak MB": r.get("phase_peak_rss_mb"), "process peak MB": r.get("peak_rss_mb"),
                     "load": r["load_before"][0],
                     "skipped/error": r.get("skipped") or r.get("error")})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the ML-1M loss comparison

#: The losses compared on ML-1M (issue 23, part 2): SASRec under the faithful recipe, the same budget each.
LOSS_VARIANTS: dict[str, list[str]] = {
    "bce": ["--loss", "bce"],
    "ce": ["--loss", "ce"],
    "ss16-uniform": ["--loss", "sampled-softmax", "--negatives", "16", "--negative-sampling", "uniform"],
    "ss64-uniform": ["--loss", "sampled-softmax", "--negatives", "64", "--negative-sampling", "uniform"],
    "ss256-uniform": ["--loss", "sampled-softmax", "--negatives", "256", "--negative-sampling", "uniform"],
    "ss256-popularity": ["--loss", "sampled-softmax", "--negatives", "256", "--negative-sampling", "popularity"],
    "ss1024-uniform": ["--loss", "sampled-softmax", "--negatives", "1024", "--negative-sampling", "uniform"],
}
#: Validate (and test) every this many epochs in the comparison.
LOSS_EVAL_EVERY = 5


def loss_command(variant: str, seed: int, epochs: int, runs: str = "runs/loss-compare") -> list[str]:
    """The training command of one run of the comparison (resumable: `--resume` continues its folder)."""
    return ["python", "-m", "helpers.train", "--dataset", "ml-1m", "--model", "sasrec", "--recipe", "faithful",
            *LOSS_VARIANTS[variant], "--epochs", str(epochs), "--eval-every", str(LOSS_EVAL_EVERY),
            "--seed", str(seed), "--quiet", "--resume", "--out", f"{runs}/{variant}-s{seed}"]


def loss_table(runs: Path, variants: list[str], seeds: list[int], epochs: int) -> pd.DataFrame:
    """One row per finished run of the comparison: its best epoch by validation (sampled NDCG@10, as it was
    trained), test NDCG@10 / HR@10 of that epoch's weights under both protocols, seconds per epoch."""
    import torch

    from helpers.evaluate import Evaluator
    from helpers.model import load_checkpoint
    from helpers.runs import RunFolder

    split = leave_one_out(load_dataset("ml-1m"))
    evaluators = {p: Evaluator(split, "test", p) for p in ("sampled", "full")}
    rows = []
    for variant in variants:
        for seed in seeds:
            folder = RunFolder(runs / f"{variant}-s{seed}")
            if not folder.best.exists() or not folder.history.exists():
                continue
            history = pd.read_csv(folder.history)
            model, ckpt = load_checkpoint(folder.best, torch.device("cpu"))
            train = ckpt["train"]
            row: dict[str, Any] = {"variant": variant, "seed": seed, "loss": train["loss"],
                                   "negatives": train.get("negatives", 0),
                                   "negative_sampling": train.get("negative_sampling", "") if train.get("negatives")
                                   else "", "epochs_done": int(history["epoch"].max()), "epochs_planned": epochs,
                                   "best_epoch": int(ckpt["best"]["epoch"]),
                                   "valid_sampled_ndcg@10": ckpt["best"]["valid_ndcg@10"]}
            for protocol, ev in evaluators.items():
                metrics = ev(model)
                row[f"test_{protocol}_ndcg@10"] = metrics["ndcg@10"]
                row[f"test_{protocol}_hr@10"] = metrics["hr@10"]
            row["recorded_test_sampled_ndcg@10"] = ckpt["best"]["test_ndcg@10"]
            row["seconds_per_epoch"] = float(history["seconds"].median())
            row["command"] = shlex.join(loss_command(variant, seed, epochs, str(runs)))
            row["cpu"] = cpu_name()
            rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- acceptance checks


def accept(name: str, command: list[str], out: Path, threads: int | None = None,
           shown: str | None = None) -> dict[str, Any]:
    """Run `command` to its end and add its record to `out` (JSON, keyed by `name`): the command, wall
    seconds, the peak resident memory of its largest process (`getrusage(RUSAGE_CHILDREN)`: every process
    it started and waited for, torchrun's workers included), the last JSON line it printed, and the load."""
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    record: dict[str, Any] = {"command": shown or shlex.join(command),
                              "threads_env": threads, "date": _now(), "load_before": load_average(),
                              "machine": machine()}
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO_ROOT)
    record["wall_seconds"] = time.perf_counter() - t0
    record["load_after"] = load_average()
    record["exit_code"] = done.returncode
    record["peak_rss_mb_largest_process"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    printed = [line for line in done.stdout.splitlines() if line.startswith("{")]
    record["result"] = json.loads(printed[-1]) if printed else None
    if done.returncode:
        record["stderr_tail"] = done.stderr.strip()[-2000:]
    records = json.loads(out.read_text()) if out.exists() else {}
    records[name] = record
    write_json(out, records)
    return record


# --------------------------------------------------------------------------- figure


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


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """`make` a synthetic `user item` file, measure one `point`, or run a `bench` plan."""
    parser = argparse.ArgumentParser(prog="python -m helpers.studies.scale", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make", help="write a synthetic dataset as a 'user item' file")
    make.add_argument("--shape", choices=sorted(SHAPES), required=True)
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--out", required=True)
    one = sub.add_parser("point", help="measure one configuration in this process (what bench runs)")
    one.add_argument("--json", required=True, help="the Point as JSON")
    one.add_argument("--out", required=True, help="record file; each rank writes OUT-STEM.rankR.json")
    run = sub.add_parser("bench", help="measure a plan's points, each in fresh processes")
    run.add_argument("--plan", default="recorded", choices=("recorded", "layouts", "tiny"))
    run.add_argument("--only", nargs="*", default=None, help="indices into the plan to run (default: all)")
    run.add_argument("--timeout", type=float, default=900.0, help="seconds per point")
    run.add_argument("--out", default="artifacts/scale.json")
    run.add_argument("--resume", action="store_true", help="keep the records in --out, measure the other points")
    run.add_argument("--wait-quiet", type=float, default=0.0,
                     help="before each point, wait up to this many seconds for other busy processes (nice < 10)")
    loss = sub.add_parser("losses", help="the ML-1M loss comparison: print its commands, or tabulate its runs")
    loss.add_argument("what", choices=("commands", "table"))
    loss.add_argument("--variants", nargs="+", default=list(LOSS_VARIANTS), choices=list(LOSS_VARIANTS))
    loss.add_argument("--seeds", nargs="+", type=int, default=[0])
    loss.add_argument("--epochs", type=int, default=20)
    loss.add_argument("--runs", default="runs/loss-compare")
    loss.add_argument("--csv", default="artifacts/ml1m_loss_compare.csv")
    check = sub.add_parser("accept", help="run a command and record its time, peak memory and printed result")
    check.add_argument("--name", required=True)
    check.add_argument("--out", default="artifacts/scale_acceptance.json")
    check.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the command")
    check.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, after --")
    md = sub.add_parser("markdown", help="print the benchmark's records as Markdown tables")
    md.add_argument("--json", default="artifacts/scale.json")
    fig = sub.add_parser("figure", help="draw the scale figure from the benchmark's JSON and the loss CSV")
    fig.add_argument("--json", default="artifacts/scale.json")
    fig.add_argument("--losses", default="artifacts/ml1m_loss_compare.csv")
    fig.add_argument("--out", default="artifacts/figures/scale.png")
    args = parser.parse_args(argv)
    if args.command == "markdown":
        print(markdown(json.loads(Path(args.json).read_text())))
        return 0
    if args.command == "figure":
        losses = pd.read_csv(args.losses) if Path(args.losses).exists() else None
        print(figure(json.loads(Path(args.json).read_text()), losses, Path(args.out)))
        return 0
    if args.command == "accept":
        given = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        # this interpreter for `python`, and its torch.distributed.run for `torchrun` (a virtual environment
        # that is not activated has no torchrun on the PATH)
        starts = {"python": [sys.executable], "torchrun": [sys.executable, "-m", "torch.distributed.run"]}
        cmd = [*starts[given[0]], *given[1:]] if given[:1] and given[0] in starts else given
        record = accept(args.name, cmd, Path(args.out), args.threads, shown=shlex.join(given))
        print(json.dumps({k: record[k] for k in ("command", "exit_code", "wall_seconds",
                                                   "peak_rss_mb_largest_process", "result")}))
        return record["exit_code"]
    if args.command == "losses":
        if args.what == "commands":
            for seed in args.seeds:
                for variant in args.variants:
                    print(shlex.join(loss_command(variant, seed, args.epochs, args.runs)))
            return 0
        frame = loss_table(Path(args.runs), args.variants, args.seeds, args.epochs)
        text = frame.to_csv(index=False)
        atomic_write(Path(args.csv), lambda f: f.write(text.encode()))
        print(frame.drop(columns="command").round(4).to_string())
        return 0
    if args.command == "make":
        shape = replace(SHAPES[args.shape], seed=args.seed)
        data = synthesize(shape)
        path = write_pairs(data, args.out)
        print(json.dumps({"out": str(path), "shape": asdict(shape), **describe(data)}))
    elif args.command == "point":
        point = Point(**json.loads(args.json))
        record = run_point(point)
        out = Path(args.out)
        text = json.dumps(record)
        atomic_write(out.with_name(f"{out.stem}.rank{record['rank']}.json"), lambda f: f.write(text.encode()))
    else:
        points = plan(args.plan)
        if args.only is not None:
            points = [points[int(i)] for i in args.only]
        command = shlex.join(["python", "-m", "helpers.studies.scale", *(argv if argv is not None else sys.argv[1:])])
        result = bench(points, Path(args.out), args.timeout, command=command, wait_quiet=args.wait_quiet,
                       resume=args.resume)
        print(table(result).to_string())
    return 0


if __name__ == "__main__":
    run_cli(main)
