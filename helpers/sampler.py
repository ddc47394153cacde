"""Vectorised training batches: input windows, next-item targets, negatives, SSE and SSE-PT++.

Every random draw comes from one seeded `numpy.random.Generator`, so the same seed
gives the same batches. No Python loop runs per item or per user.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from helpers.data import SequenceData, Split, prefix_mask
from helpers.errors import ConfigError

T = TypeVar("T")


def gather_windows(items: np.ndarray, start: np.ndarray, end: np.ndarray, width: int) -> np.ndarray:
    """Rows of `items[max(start, end - width):end]`, right-aligned and left-padded with 0."""
    idx = end[:, None] - width + np.arange(width)[None, :]
    real = idx >= start[:, None]
    return np.where(real, items[np.clip(idx, 0, None)] if items.size else 0, 0)


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
        self.keys = np.unique(user_of_row[keep] * self.stride + data.items[keep])
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
        width = int(2 * (count - filled[rows]).max() + 8)
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


@dataclass
class Batch:
    """One training batch; arrays are (B,) or (B, L) with L <= maxlen, left-padded with 0."""

    users: np.ndarray  # user ids fed to the model (after user SSE)
    seq: np.ndarray  # input items
    pos: np.ndarray  # next-item targets (after item SSE); 0 at padding
    neg: np.ndarray  # one negative per position, never in the user's training history

    @property
    def n_positions(self) -> int:
        """Number of real (non-padded) positions."""
        return int((self.pos > 0).sum())

    def split(self, parts: int) -> list[Batch]:
        """The same rows cut into at most `parts` batches of similar length, each trimmed.

        Summing a loss over the pieces gives exactly the gradient of the whole batch (rows
        never interact), with less padding computed: see `partition_by_length`.
        """
        if parts <= 1:
            return [self]
        lengths = (self.pos > 0).sum(axis=1)
        pieces = []
        for rows in partition_by_length(lengths, parts):
            width = max(int(lengths[rows].max()), 1)
            pieces.append(Batch(self.users[rows], self.seq[rows, -width:], self.pos[rows, -width:],
                                self.neg[rows, -width:]))
        return pieces


def partition_by_length(lengths: np.ndarray, parts: int) -> list[np.ndarray]:
    """Row indices in at most `parts` groups that minimise the padded work.

    Rows are sorted by length and cut into contiguous groups; the cuts minimise
    sum(group size * longest length in the group), the number of cells a batch padded to
    its longest row computes. Exact dynamic programming over the sorted lengths.
    """
    order = np.argsort(lengths, kind="stable")
    n = order.size
    longest = np.concatenate([[0], np.asarray(lengths)[order]]).astype(np.float64)  # longest[j] = j-th shortest
    j = np.arange(n + 1)
    # cost[j, i]: rows i..j-1 in one group (only i < j allowed)
    span_cost = np.where(j[None, :] < j[:, None], (j[:, None] - j[None, :]) * longest[:, None], np.inf)
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    choices = []
    for _ in range(max(1, min(parts, n))):
        total = best[None, :] + span_cost
        choice = total.argmin(axis=1)
        stay = best <= total[j, choice]  # fewer groups are already as cheap
        choice = np.where(stay, -1, choice)
        best = np.minimum(best, total[j, choice.clip(0)])
        choices.append(choice)
    groups, end = [], n
    for choice in reversed(choices):
        start = choice[end]
        if start < 0:
            continue
        groups.append(order[start:end])
        end = start
        if end == 0:
            break
    return groups[::-1]


class TrainSampler:
    """Batches over the training users, each user once per epoch in a shuffled order."""

    def __init__(
        self,
        split: Split,
        batch_size: int,
        maxlen: int,
        rng: np.random.Generator,
        p_user: float = 0.0,
        p_item: float = 0.0,
        p_sub: float = 0.0,
        users: np.ndarray | None = None,
        bucket: int = 0,
    ) -> None:
        """`users` restricts training to a subset; `bucket` > 0 groups users of similar length.

        With `bucket = k`, each run of k * batch_size shuffled users is sorted by window
        length before it is cut into batches, and the batches are then shuffled. Each
        batch is trimmed to its longest window, so less padding is computed.
        """
        for label, p in (("p_user", p_user), ("p_item", p_item), ("p_sub", p_sub)):
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"{label} must be in [0, 1], got {p}")
        if maxlen < 1:
            raise ConfigError(f"maxlen must be at least 1, got {maxlen}")
        data = split.data
        trainable = np.flatnonzero(split.train_len >= 2)
        if users is not None:
            trainable = np.intersect1d(trainable, np.asarray(users))
        if batch_size < 1 or batch_size > trainable.size:
            raise ConfigError(
                f"batch_size {batch_size} must be between 1 and the number of training users ({trainable.size})"
            )
        self.data, self.split, self.rng = data, split, rng
        self.batch_size, self.maxlen, self.bucket = batch_size, maxlen, bucket
        self.p_user, self.p_item, self.p_sub = p_user, p_item, p_sub
        self.users = trainable
        self.history = HistoryIndex(data, split.train_len)

    def __len__(self) -> int:
        return -(-self.users.size // self.batch_size)

    def epoch(self) -> Iterator[Batch]:
        """Yield one epoch of batches (the last one may be smaller)."""
        order = self.rng.permutation(self.users)
        if self.bucket > 0:
            span = self.bucket * self.batch_size
            length = np.minimum(self.split.train_len[order] - 1, self.maxlen)
            keys = np.arange(order.size) // span * (self.maxlen + 1) + length
            order = order[np.argsort(keys, kind="stable")]
        batches = [order[i : i + self.batch_size] for i in range(0, order.size, self.batch_size)]
        if self.bucket > 0:
            batches = [batches[i] for i in self.rng.permutation(len(batches))]
        for users in batches:
            yield self.make_batch(users)

    def make_batch(self, users: np.ndarray) -> Batch:
        """Build the batch for these users, drawing SSE-PT++ windows, SSE and negatives."""
        rng, n = self.rng, users.size
        start = self.data.offsets[users]
        n_pairs = self.split.train_len[users] - 1  # input positions t -> target t + 1
        end = n_pairs.copy()  # window of input positions ends (exclusively) here
        if self.p_sub > 0:
            long = (n_pairs > self.maxlen) & (rng.random(n) < self.p_sub)
            span = n_pairs - self.maxlen + 1  # choices for the window's end
            end = np.where(long, self.maxlen + (rng.random(n) * np.maximum(span, 1)).astype(np.int64), end)
        width = int(np.minimum(end, self.maxlen).max())
        seq = gather_windows(self.data.items, start, start + end, width)
        pos = gather_windows(self.data.items, start + 1, start + end + 1, width)
        real = pos > 0
        neg = sample_negatives(rng, self.history, users, width, distinct=False) * real
        fed_users = users.copy()
        if self.p_user > 0:
            swap = rng.random(n) < self.p_user
            fed_users[swap] = rng.integers(1, self.data.n_users + 1, size=int(swap.sum()))
        if self.p_item > 0:
            swap = real & (rng.random(seq.shape) < self.p_item)
            k = int(swap.sum())
            seq[swap] = rng.integers(1, self.data.n_items + 1, size=k)
            pos[swap] = rng.integers(1, self.data.n_items + 1, size=k)
        return Batch(fed_users, seq, pos, neg)


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield `items` in order, each made ahead by a background thread (at most `depth` waiting).

    Batches are built while the model trains on the previous one; most of the sampler's
    NumPy work releases the GIL, so on a GPU the sampling time hides behind the step. The
    items and their order are exactly those of `items`: one thread consumes the iterator
    (and so the sampler's random generator) in sequence. An error in the thread is raised
    here; leaving the loop early stops the thread.
    """
    done = object()
    box: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()

    def put(value: object) -> bool:
        while not stop.is_set():
            try:
                box.put(value, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as err:  # handed to the consumer, which re-raises it
            put((done, err))
            return
        put((done, None))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, err = box.get()
            if item is done:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        thread.join()
