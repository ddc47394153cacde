"""The batch sampler: shapes, windows, negatives, SSE rates, SSE-PT++ and seeding."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import data
from helpers.errors import ConfigError
from helpers.history import HistoryIndex
from helpers.sampler import PREFETCH_POLL_S, TrainSampler, partition_by_length, prefetch


def _sampler(split: data.Split, seed: int = 0, **kw) -> TrainSampler:
    kw = {"batch_size": 2, "maxlen": 3} | kw
    return TrainSampler(split, rng=np.random.default_rng(seed), **kw)


def test_windows_and_targets_tiny(tiny_file: Path) -> None:
    split = data.leave_one_out(data.read_pairs(tiny_file))
    sampler = _sampler(split, batch_size=3, maxlen=3)
    batch = sampler.make_batch(np.array([1, 2, 3]))
    # user 1 trains on [1, 2, 3] -> inputs [1, 2], targets [2, 3]; user 2 on [2, 6];
    # user 3 on [6, 5]. The batch is trimmed to its longest window (2).
    assert batch.seq.tolist() == [[1, 2], [0, 2], [0, 6]]
    assert batch.pos.tolist() == [[2, 3], [0, 6], [0, 5]]
    assert batch.users.tolist() == [1, 2, 3]
    assert ((batch.neg > 0) == (batch.pos > 0)).all()
    # no negative is in the user's training items
    train = {1: {1, 2, 3}, 2: {2, 6}, 3: {6, 5}}
    for row, u in enumerate([1, 2, 3]):
        assert not set(batch.neg[row][batch.neg[row] > 0].tolist()) & train[u]


def test_epoch_covers_every_training_user_once(ml1m_slice: data.SequenceData) -> None:
    split = data.leave_one_out(ml1m_slice)
    sampler = TrainSampler(split, 64, 50, np.random.default_rng(1))
    batches = list(sampler.epoch())
    assert len(batches) == len(sampler) == 5
    assert all(b.seq.shape[1] <= 50 and b.seq.shape == b.pos.shape == b.neg.shape for b in batches)
    seen = np.concatenate([b.users for b in batches])
    assert np.array_equal(np.sort(seen), np.arange(1, 301))


def test_negatives_never_in_history_real_data(ml1m: data.SequenceData) -> None:
    split = data.leave_one_out(ml1m)
    sampler = TrainSampler(split, 256, 200, np.random.default_rng(3))
    batch = next(sampler.epoch())
    index = HistoryIndex(ml1m, split.train_len)
    real = batch.pos > 0
    users = np.broadcast_to(batch.users[:, None], batch.neg.shape)
    assert not index.contains(users[real], batch.neg[real]).any()
    assert (batch.neg[real] >= 1).all() and (batch.neg[real] <= ml1m.n_items).all()
    # Check against plain Python sets for a few users.
    for row in range(5):
        u = batch.users[row]
        hist = set(ml1m.user_items(u)[: split.train_len[u]].tolist())
        assert not hist & set(batch.neg[row][real[row]].tolist())


def test_sse_rates(ml1m: data.SequenceData) -> None:
    split = data.leave_one_out(ml1m)
    plain = TrainSampler(split, 512, 200, np.random.default_rng(5))
    sse = TrainSampler(split, 512, 200, np.random.default_rng(5), p_user=0.92, p_item=0.1)
    users = np.arange(1, 513)
    a, b = plain.make_batch(users), sse.make_batch(users)
    real = a.pos > 0
    n_items, n_users = ml1m.n_items, ml1m.n_users
    # A replacement draws a uniform id, which equals the old one with probability 1/n.
    assert (b.users != users).mean() == pytest.approx(0.92 * (1 - 1 / n_users), abs=0.04)
    assert (b.seq != a.seq)[real].mean() == pytest.approx(0.1 * (1 - 1 / n_items), abs=0.01)
    assert (b.pos != a.pos)[real].mean() == pytest.approx(0.1 * (1 - 1 / n_items), abs=0.01)
    assert ((b.seq > 0) == real).all()  # SSE never touches padding


def test_sse_pp_random_windows(ml1m: data.SequenceData) -> None:
    split = data.leave_one_out(ml1m)
    long_users = np.flatnonzero(split.train_len > 400)[:200]
    recent = TrainSampler(split, 128, 50, np.random.default_rng(2)).make_batch(long_users)
    subseq = TrainSampler(split, 128, 50, np.random.default_rng(2), p_sub=1.0).make_batch(long_users)
    assert recent.seq.shape == subseq.seq.shape == (long_users.size, 50)
    moved = (recent.seq != subseq.seq).any(axis=1).mean()
    assert moved > 0.9  # nearly every long user gets an earlier window
    # Each window is still a contiguous piece of the user's training sequence.
    for row, u in enumerate(long_users[:20]):
        train = ml1m.user_items(u)[: split.train_len[u]]
        starts = np.flatnonzero(train == subseq.seq[row, 0])
        assert any(np.array_equal(train[s : s + 50], subseq.seq[row]) for s in starts)
        assert any(np.array_equal(train[s + 1 : s + 51], subseq.pos[row]) for s in starts)


def test_same_seed_same_batches(ml1m_slice: data.SequenceData) -> None:
    split = data.leave_one_out(ml1m_slice)
    kw = {"p_user": 0.5, "p_item": 0.2, "p_sub": 0.5, "bucket": 2}
    one = list(TrainSampler(split, 32, 40, np.random.default_rng(9), **kw).epoch())
    two = list(TrainSampler(split, 32, 40, np.random.default_rng(9), **kw).epoch())
    other = list(TrainSampler(split, 32, 40, np.random.default_rng(10), **kw).epoch())
    for a, b in zip(one, two):
        for f in ("users", "seq", "pos", "neg"):
            assert np.array_equal(getattr(a, f), getattr(b, f))
    assert not all(np.array_equal(a.seq, b.seq) for a, b in zip(one, other))


def test_prefetch_gives_the_same_batches_and_generator_state(ml1m_slice: data.SequenceData) -> None:
    split = data.leave_one_out(ml1m_slice)
    kw = {"p_user": 0.5, "p_item": 0.2, "p_sub": 0.5}
    plain_rng, ahead_rng = np.random.default_rng(3), np.random.default_rng(3)
    plain = list(TrainSampler(split, 32, 40, plain_rng, **kw).epoch())
    ahead = list(prefetch(TrainSampler(split, 32, 40, ahead_rng, **kw).epoch(), depth=3))
    assert len(plain) == len(ahead) > 3
    for a, b in zip(plain, ahead):
        for f in ("users", "seq", "pos", "neg"):
            assert np.array_equal(getattr(a, f), getattr(b, f))
    # the next epoch (what a checkpoint's generator state decides) is the same too
    assert plain_rng.integers(1 << 30) == ahead_rng.integers(1 << 30)


def test_prefetch_raises_the_threads_error_and_stops_early() -> None:
    def failing():
        yield 1
        raise ValueError("sampler broke")

    got = []
    with pytest.raises(ValueError, match="sampler broke"):
        for x in prefetch(failing()):
            got.append(x)
    assert got == [1]
    made = []

    def endless():
        for i in itertools.count():
            made.append(i)
            yield i

    before = set(threading.enumerate())
    stream = prefetch(endless(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    (thread,) = [t for t in threading.enumerate() if t not in before and t.name == "prefetch"]
    stream.close()  # stops the thread: nothing more is made
    assert not thread.is_alive()
    settled = len(made)
    assert settled <= 3 + 2 + 1
    time.sleep(5 * PREFETCH_POLL_S)  # a thread still running would have made more by now
    assert len(made) == settled


def test_bucketing_trims_padding(ml1m: data.SequenceData) -> None:
    split = data.leave_one_out(ml1m)
    plain = list(TrainSampler(split, 128, 200, np.random.default_rng(0)).epoch())
    bucketed = list(TrainSampler(split, 128, 200, np.random.default_rng(0), bucket=8).epoch())
    cells = lambda bs: sum(b.seq.size for b in bs)  # noqa: E731
    real = lambda bs: sum(b.n_positions for b in bs)  # noqa: E731
    assert real(plain) == real(bucketed)  # same positions trained
    assert cells(bucketed) < 0.75 * cells(plain)


def test_partition_by_length_tiny() -> None:
    # Sorted lengths 1 1 2 | 5 5 9 cost 3 * 2 + 3 * 9 = 33; every other cut into two costs more.
    groups = partition_by_length(np.array([5, 1, 1, 5, 2, 9]), 2)
    assert [g.tolist() for g in groups] == [[1, 2, 4], [0, 3, 5]]
    assert [g.tolist() for g in partition_by_length(np.array([3, 3, 3]), 4)] == [[0, 1, 2]]
    assert [g.tolist() for g in partition_by_length(np.array([4, 2]), 1)] == [[1, 0]]


def test_partition_by_length_is_optimal() -> None:
    rng = np.random.default_rng(1)
    for _ in range(100):
        lengths, parts = rng.integers(1, 10, size=int(rng.integers(1, 8))), int(rng.integers(1, 5))
        groups = partition_by_length(lengths, parts)
        assert sorted(np.concatenate(groups).tolist()) == list(range(lengths.size)) and len(groups) <= parts
        srt, n = np.sort(lengths), lengths.size
        brute = min(
            sum((b[i + 1] - b[i]) * srt[b[i + 1] - 1] for i in range(len(b) - 1))
            for m in range(1, min(parts, n) + 1) for cuts in itertools.combinations(range(1, n), m - 1)
            for b in [[0, *cuts, n]]
        )
        assert sum(g.size * lengths[g].max() for g in groups) == brute


def test_split_batch_keeps_every_real_position(ml1m: data.SequenceData) -> None:
    split = data.leave_one_out(ml1m)
    batches = list(TrainSampler(split, 128, 200, np.random.default_rng(0), p_user=0.5, p_item=0.1).epoch())

    cells_plain = cells_split = 0
    for batch in batches[:12]:
        pieces = batch.split(4)
        assert 1 <= len(pieces) <= 4
        width = batch.seq.shape[1]
        whole = np.concatenate([batch.users[:, None], batch.seq, batch.pos, batch.neg], axis=1)
        again = np.concatenate([
            np.concatenate([p.users[:, None]] + [np.pad(getattr(p, f), ((0, 0), (width - p.seq.shape[1], 0)))
                                                 for f in ("seq", "pos", "neg")], axis=1)
            for p in pieces])
        assert sorted(map(tuple, whole.tolist())) == sorted(map(tuple, again.tolist()))  # same rows, only trimmed
        for p in pieces:
            assert (p.pos[:, 0] > 0).any()  # each piece trimmed to its longest row, no further
        cells_plain += batch.seq.size
        cells_split += sum(p.seq.size for p in pieces)
    assert cells_split < 0.75 * cells_plain


@pytest.mark.parametrize(
    ("kw", "needle"),
    [({"p_user": 1.5}, "p_user must be in"), ({"p_item": -0.1}, "p_item must be in"),
     ({"maxlen": 0}, "maxlen must be at least 1"), ({"batch_size": 10}, "batch_size 10 must be between")],
)
def test_sampler_bad_settings(tiny_file: Path, kw: dict, needle: str) -> None:
    split = data.leave_one_out(data.read_pairs(tiny_file))
    with pytest.raises(ConfigError, match=needle):
        _sampler(split, **kw)
