"""Vectorised training batches: input windows, next-item targets, negatives, SSE and SSE-PT++.

Every random draw comes from one seeded `numpy.random.Generator`, so the same seed
gives the same batches. No Python loop runs per item or per user.

With several processes (`helpers.distributed`), `batch_size` is the global batch: every rank draws
the same order of users from a generator shared by all ranks (`order_rng`), cuts the same global
batches, and trains its share of each; its own draws (windows, negatives, SSE) come from its own
generator (`draw_rng`). With one process both are the same generator.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from helpers.data import Split, item_popularity
from helpers.errors import ConfigError
from helpers.history import HistoryIndex, gather_windows, sample_negatives
from helpers.settings import NEGATIVE_SAMPLINGS

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
    shared_neg: np.ndarray | None = None  # (R,) sampled softmax: negatives every position shares; else None
    shared_log_q: np.ndarray | None = None  # (R,) their log sampling probabilities (popularity sampling); else None
    pos_log_q: np.ndarray | None = None  # (B, L) the same for the targets, 0 at padding (popularity); else None

    @property
    def n_positions(self) -> int:
        """Number of real (non-padded) positions."""
        return int((self.pos > 0).sum())

    def split(self, parts: int) -> list[Batch]:
        """The same rows cut into at most `parts` batches of similar length, each trimmed.

        Summing a loss over the pieces gives exactly the gradient of the whole batch (rows
        never interact), with less padding computed: see `partition_by_length`. The shared
        negatives of the sampled softmax are the whole batch's, in every piece.
        """
        if parts <= 1:
            return [self]
        lengths = (self.pos > 0).sum(axis=1)
        pieces = []
        for rows in partition_by_length(lengths, parts):
            width = max(int(lengths[rows].max()), 1)
            pos_log_q = None if self.pos_log_q is None else self.pos_log_q[rows, -width:]
            pieces.append(Batch(self.users[rows], self.seq[rows, -width:], self.pos[rows, -width:],
                                self.neg[rows, -width:], self.shared_neg, self.shared_log_q, pos_log_q))
        return pieces


class SharedNegatives:
    """How the sampled softmax draws the `count` negatives that every position of a batch shares.

    Each is an independent draw (with replacement) over the item ids 1..n_items, whatever the users'
    histories: uniform, or in proportion to the item's count in the training part plus one (the one
    keeps every item drawable, and the log-probability of an item never trained on finite: item SSE
    can make such an item a target). `log_q[j]` is the log-probability of drawing item j in one draw,
    which the loss subtracts from item j's logit (the log-Q correction; `helpers.losses`); None for
    uniform draws, where it is the same for every item and the softmax ignores it. `log_q[0]` (padding,
    never drawn) is 0, so padded positions stay finite.
    """

    def __init__(self, count: int, n_items: int, counts: np.ndarray | None = None) -> None:
        """`counts` (n_items + 1,): training counts by item id for popularity draws; None for uniform."""
        if count < 1:
            raise ConfigError(f"negatives must be at least 1 for the sampled softmax, got {count}")
        if count >= n_items:
            raise ConfigError(f"negatives {count} must be below the number of items ({n_items}): pass "
                              f"--negatives {n_items - 1} or fewer, or --loss ce for a softmax over every item")
        self.count, self.n_items = count, n_items
        self.cumulative: np.ndarray | None = None
        self.log_q: np.ndarray | None = None
        if counts is not None:
            weights = np.asarray(counts, dtype=np.float64)[1:] + 1.0
            self.cumulative = np.cumsum(weights)
            self.log_q = np.concatenate([[0.0], np.log(weights / self.cumulative[-1])]).astype(np.float32)

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """`count` item ids, each drawn independently from the distribution."""
        if self.cumulative is None:
            return rng.integers(1, self.n_items + 1, size=self.count)
        picks = np.searchsorted(self.cumulative, rng.random(self.count) * self.cumulative[-1], side="right")
        return np.minimum(picks, self.n_items - 1) + 1

    def batch_fields(self, rng: np.random.Generator, pos: np.ndarray) -> dict[str, np.ndarray]:
        """A batch's shared negatives and the log-probabilities of them and of its targets `pos`."""
        shared = self.draw(rng)
        if self.log_q is None:
            return {"shared_neg": shared}
        return {"shared_neg": shared, "shared_log_q": self.log_q[shared], "pos_log_q": self.log_q[pos]}


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
    """Batches over the training users, each user once per epoch in a shuffled order (across all ranks)."""

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
        order_rng: np.random.Generator | None = None,
        rank: int = 0,
        world: int = 1,
        negatives: int = 0,
        negative_sampling: str = "uniform",
    ) -> None:
        """`users` restricts training to a subset; `bucket` > 0 groups users of similar length.

        With `bucket = k`, each run of k * batch_size shuffled users is sorted by window
        length before it is cut into batches, and the batches are then shuffled. Each
        batch is trimmed to its longest window, so less padding is computed.

        `rng` makes this process's draws (windows, negatives, SSE); `order_rng` the epoch's order,
        the same on every rank (default: `rng`, as one process does). With `world` > 1 processes,
        rank `rank` trains every `world`-th user of each global batch of `batch_size` users.

        `negatives` > 0 draws that many negatives per batch for the sampled softmax (`SharedNegatives`),
        "uniform" or by the trained users' "popularity"; with 0 no such draw is made.
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
        if world > trainable.size:
            raise ConfigError(f"{world} processes but only {trainable.size} training users: each process needs "
                              f"at least one; launch at most {trainable.size} (torchrun --nproc_per_node)")
        if batch_size < 1 or batch_size > trainable.size:
            raise ConfigError(
                f"batch_size {batch_size} must be between 1 and the number of training users ({trainable.size})"
            )
        if batch_size < world:
            raise ConfigError(f"batch_size {batch_size} is the global batch, shared by {world} processes: "
                              f"pass --batch-size {world} or more, or launch fewer processes")
        self.data, self.split = data, split
        self.draw_rng = rng  # this rank's draws; the only generator `make_batch` uses
        self.order_rng = order_rng if order_rng is not None else rng  # the epoch's order, shared by all ranks
        self.rank, self.world = rank, world
        self.batch_size, self.maxlen, self.bucket = batch_size, maxlen, bucket
        self.p_user, self.p_item, self.p_sub = p_user, p_item, p_sub
        self.users = trainable
        self.history = HistoryIndex(data, split.train_len)
        self.shared = self._shared_negatives(negatives, negative_sampling)

    def _shared_negatives(self, negatives: int, sampling: str) -> SharedNegatives | None:
        """The sampled softmax's draws (None without it); popularity counts the trained users' training parts."""
        if negatives == 0:
            return None
        if sampling not in NEGATIVE_SAMPLINGS:
            raise ConfigError(f"negative_sampling must be one of {NEGATIVE_SAMPLINGS}, got {sampling!r}")
        counts = None
        if sampling == "popularity":
            trained = np.zeros_like(self.split.train_len)
            trained[self.users] = self.split.train_len[self.users]
            counts = item_popularity(self.data, trained)
        return SharedNegatives(negatives, self.data.n_items, counts)

    def __len__(self) -> int:
        batches = -(-self.users.size // self.batch_size)
        return batches - int(self._merges_last(batches))

    def _merges_last(self, batches: int) -> bool:
        """Does a last batch with fewer users than processes join the one before (so no rank is left idle)?"""
        return batches > 1 and self.users.size - (batches - 1) * self.batch_size < self.world

    def global_batches(self) -> list[np.ndarray]:
        """One epoch's batches of users, the same on every rank (the last may be smaller, or larger by
        fewer users than there are processes)."""
        order = self.order_rng.permutation(self.users)
        if self.bucket > 0:
            span = self.bucket * self.batch_size
            length = np.minimum(self.split.train_len[order] - 1, self.maxlen)
            keys = np.arange(order.size) // span * (self.maxlen + 1) + length
            order = order[np.argsort(keys, kind="stable")]
        batches = [order[i : i + self.batch_size] for i in range(0, order.size, self.batch_size)]
        if self._merges_last(len(batches)):
            batches[-2:] = [np.concatenate(batches[-2:])]
        if self.bucket > 0:
            batches = [batches[i] for i in self.order_rng.permutation(len(batches))]
        return batches

    def positions(self, users: np.ndarray) -> int:
        """Real positions in a batch of `users`, known before drawing: an SSE-PT++ window of a long history
        is `maxlen` long like the recent one, and SSE replaces items, never removes them."""
        return int(np.minimum(self.split.train_len[users] - 1, self.maxlen).sum())

    def shares(self) -> Iterator[tuple[Batch, int]]:
        """One epoch: this rank's share of each global batch, with the global batch's number of real
        positions (what the loss of every share is divided by). With one process, the whole batches."""
        for users in self.global_batches():
            if self.world == 1:
                batch = self.make_batch(users)
                yield batch, batch.n_positions
            else:
                yield self.make_batch(users[self.rank :: self.world]), self.positions(users)

    def epoch(self) -> Iterator[Batch]:
        """Yield one epoch of batches (this rank's shares of them with several processes)."""
        for batch, _ in self.shares():
            yield batch

    def make_batch(self, users: np.ndarray) -> Batch:
        """Build the batch for these users, drawing SSE-PT++ windows, SSE and negatives."""
        rng, n = self.draw_rng, users.size
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
        if self.shared is None:  # only the sampled softmax draws shared negatives, after everything else
            return Batch(fed_users, seq, pos, neg)
        return Batch(fed_users, seq, pos, neg, **self.shared.batch_fields(rng, pos))


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
