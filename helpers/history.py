"""Users' histories, for training and evaluation alike: windows, membership, negatives.

Windows of a history (`gather_windows`), whether an item is in it (`HistoryIndex`) and
random items outside it (`sample_negatives`). `helpers.sampler` builds training batches
from these, `helpers.evaluate` its inputs and sampled negatives; neither borrows from
the other.
"""

from __future__ import annotations

import numpy as np

from helpers.data import SequenceData, prefix_mask
from helpers.errors import ConfigError

#: Distinct negatives are drawn in rounds of OVERDRAW_FACTOR * (items a row still lacks) +
#: OVERDRAW_EXTRA candidates per row, so most rows fill in one round despite repeats and history items.
OVERDRAW_FACTOR, OVERDRAW_EXTRA = 2, 8


def gather_windows(items: np.ndarray, start: np.ndarray, end: np.ndarray, width: int) -> np.ndarray:
    """Rows of `items[max(start, end - width):end]`, right-aligned and left-padded with 0."""
    idx = end[:, None] - width + np.arange(width)[None, :]
    real = idx >= start[:, None]
    return np.where(real, items[np.clip(idx, 0, None)] if items.size else 0, 0)


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """`np.unique(values)` of a 1-D array, by one sort and a comparison of neighbours: the same array, much
    faster than numpy 2.4's `np.unique` on the tens of millions of keys of an ML-20M-sized history
    (docs/log.md, the first scale measurements)."""
    ordered = np.sort(values)
    keep = np.ones(ordered.size, dtype=bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    return ordered[keep]


class HistoryIndex:
    """Set membership `item in history(user)` for many pairs at once, without a dense matrix.

    Keys `user * (n_items + 1) + item` of each user's history prefix are kept sorted, and a
    lookup is one `searchsorted`: memory grows with the rows, not with users x items.
    """

    def __init__(self, data: SequenceData, prefix_len: np.ndarray | None = None) -> None:
        user_of_row = np.repeat(np.arange(data.n_users + 1), data.lengths)
        keep = prefix_mask(data, prefix_len) if prefix_len is not None else slice(None)
        self.stride = data.n_items + 1
        self.n_items = data.n_items
        self.keys = sorted_unique(user_of_row[keep] * self.stride + data.items[keep])
        self.n_distinct = np.bincount(self.keys // self.stride, minlength=data.n_users + 1)

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Boolean array, broadcast over `users` and `items`: is the item in that user's history."""
        keys = np.asarray(users) * self.stride + np.asarray(items)
        pos = np.searchsorted(self.keys, keys)
        return self.keys[np.minimum(pos, self.keys.size - 1)] == keys if self.keys.size else np.zeros(keys.shape, bool)


def sample_negatives(
    rng: np.random.Generator, index: HistoryIndex, users: np.ndarray, count: int, distinct: bool
) -> np.ndarray:
    """(len(users), count) random items in 1..n_items that are not in each user's history.

    With `distinct`, the items in a row are all different (the 1 + 100 protocol). Rejected
    draws are redrawn in rounds, so every accepted item is uniform over the allowed ones.
    """
    users = np.asarray(users, dtype=np.int64)
    free = index.n_items - index.n_distinct[users]
    need = count if distinct else 1
    if users.size and free.min() < need:
        bad = users[np.argmin(free)]
        raise ConfigError(
            f"user {bad} has only {free.min()} items outside their history; {need} negatives are needed"
        )
    out = np.zeros((users.size, count), dtype=np.int64)
    if not distinct:
        todo = np.ones(out.shape, dtype=bool)
        while todo.any():
            rows, cols = np.nonzero(todo)
            draw = rng.integers(1, index.n_items + 1, size=rows.size)
            ok = ~index.contains(users[rows], draw)
            out[rows[ok], cols[ok]] = draw[ok]
            todo[rows[ok], cols[ok]] = False
        return out
    filled = np.zeros(users.size, dtype=np.int64)
    while (filled < count).any():
        rows = np.flatnonzero(filled < count)
        width = int(OVERDRAW_FACTOR * (count - filled[rows]).max() + OVERDRAW_EXTRA)
        cand = rng.integers(1, index.n_items + 1, size=(rows.size, width))
        fresh = _first_occurrence(np.concatenate([out[rows], cand], axis=1))[:, count:]
        ok = fresh & ~index.contains(users[rows][:, None], cand)
        rank = np.cumsum(ok, axis=1) - 1
        take = ok & (rank < (count - filled[rows])[:, None])
        r, c = np.nonzero(take)
        out[rows[r], filled[rows[r]] + rank[r, c]] = cand[r, c]
        filled[rows] += take.sum(axis=1)
    return out


def _first_occurrence(mat: np.ndarray) -> np.ndarray:
    """True where a value does not appear earlier in its row."""
    order = np.argsort(mat, axis=1, kind="stable")
    ordered = np.take_along_axis(mat, order, axis=1)
    repeat = np.zeros(mat.shape, dtype=bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    first = np.empty_like(repeat)
    np.put_along_axis(first, order, ~repeat, axis=1)
    return first
