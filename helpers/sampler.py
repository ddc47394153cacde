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

from helpers.data import Split
from helpers.errors import ConfigError
from helpers.history import HistoryIndex, gather_windows, sample_negatives

T = TypeVar("T")
#: Seconds `prefetch`'s thread waits on a full queue before checking whether to stop.
PREFETCH_POLL_S = 0.05


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
                box.put(value, timeout=PREFETCH_POLL_S)
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
