"""Seeded synthetic datasets for the studies that measure cost: the same settings and seed give the same data.

- **Shapes** (`Shape`, `synthesize`; the scale study): users with log-normal lengths above a minimum (the total
  is exact), items drawn from a Zipf-like popularity `p(rank k) ~ k^-exponent`, every item id present at least
  once (one row of each is placed first) unless a shape says otherwise, item id = popularity rank (1 the most
  popular). Items are drawn independently, so a user may meet an item twice (MovieLens has no repeats); the
  cost does not depend on it. `cached` keeps a shape as `.npz` (it loads in a second, so a measured process's
  peak memory is training's, not the text parser's); `helpers.convert.write_pairs` writes it as a `user item`
  file that `python -m helpers.train --dataset FILE` reads.
- **Lengths of a real dataset** (`lengths_like`; the speed benchmark's `--scale`): users whose lengths are drawn
  from a dataset's, items from the same Zipf-like popularity.
- **Full windows** (`full_windows`; the large-catalogue memory study): every user has the same number of
  uniformly random items, so every batch fills its window.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from helpers.data import SequenceData, Split, leave_one_out, pairs_to_sequences, stats
from helpers.utils import REPO_ROOT, atomic_write

#: Where the scale study caches its synthetic datasets (`.npz`) and writes its per-point files; its benchmark
#: hands the folder to the processes it starts through this environment variable.
CACHE_ENV = "SSEPT_SCALE_CACHE"
CACHE = Path(os.environ.get(CACHE_ENV) or REPO_ROOT / "runs" / "scale")


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


#: Why 0.8: no single exponent fits a real catalogue. ML-1M's rank-count curve is flatter than that over its
#: most rated movies and steeper from rank 100 on (docs/scale.md, "Synthetic data"); 0.8, between them, is also what
#: `lengths_like` uses, so the scale study and the speed benchmark are comparable.
ZIPF_NOTE = "p(item of popularity rank k) ~ k^-0.8"
#: The Zipf exponent of `lengths_like` (ZIPF_NOTE).
LIKE_EXPONENT = 0.8

#: MovieLens-20M's size (138,493 users, 27,278 movies, 20,000,263 ratings: the dataset's README), and a
#: catalogue of 1,000,000 item ids with 10,000 users and 1,000,000 rows (100 per user, at least 20). The
#: cost of a step depends on the catalogue (tables, Adam, scoring), not on the users, so few users keep a
#: full-ranking evaluation of all of them (a million scores each, valid and test) short on a small CPU.
#: Items are not forced to occur (`every_item=False`): as in a shop, many ids are never bought (`describe`
#: counts them), and the long tail is the Zipf draw's alone.
SHAPES = {
    "ml-20m": Shape("ml-20m", 138_493, 27_278, 20_000_263, min_len=20),
    "1m-items": Shape("1m-items", 10_000, 1_000_000, 1_000_000, min_len=20, every_item=False),
    # the acceptance check's file: the same catalogue, 2,000 users, so that the command line's evaluation of
    # every user (valid and test, a million scores each) fits the time a shared 2-core machine gives it
    "1m-items-2k-users": Shape("1m-items-2k-users", 2_000, 1_000_000, 200_000, min_len=20, every_item=False),
    # the tests' and a dry run's shape (the scale study's `tiny` plan)
    "tiny": Shape("tiny", 300, 500, 12_000, min_len=5),
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
    """What a record says about a synthetic dataset: `helpers.data.stats` and how its items occur."""
    row = stats(data)
    counts = np.bincount(data.items, minlength=data.n_items + 1)[1:]
    row["top_item_share"] = float(counts.max() / data.n_rows)
    row["items_seen_once"] = int((counts == 1).sum())
    row["item_ids_never_seen"] = int((counts == 0).sum())
    return row


def lengths_like(like: SequenceData, n_users: int, n_items: int, seed: int = 0) -> SequenceData:
    """`n_users` users with lengths drawn from `like`'s, items from a Zipf-like popularity (`LIKE_EXPONENT`)."""
    rng = np.random.default_rng(seed)
    lengths = rng.choice(like.lengths[like.lengths > 0], size=n_users)
    users = np.repeat(np.arange(1, n_users + 1), lengths)
    weights = 1.0 / np.arange(1, n_items + 1) ** LIKE_EXPONENT
    items = rng.choice(np.arange(1, n_items + 1), size=users.size, p=weights / weights.sum())
    return pairs_to_sequences(users, items, f"synthetic-{n_users}x{n_items}")


def full_windows(n_users: int, n_items: int, length: int, seed: int = 0) -> Split:
    """`n_users` users, each with `length` uniformly random items of `n_items` (the last one, id n_items, once)."""
    rng = np.random.default_rng(seed)
    items = rng.integers(1, n_items + 1, size=n_users * length)
    items[-1] = n_items  # the catalogue's size is its largest id
    offsets = np.concatenate([[0, 0], np.arange(1, n_users + 1) * length]).astype(np.int64)
    return leave_one_out(SequenceData(f"synthetic-{n_items}", n_users, n_items, offsets, items))
