"""History primitives shared by training and evaluation: windows, membership, negatives."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from helpers import data
from helpers.history import HistoryIndex, gather_windows, sample_negatives, sorted_unique


def test_gather_windows() -> None:
    items = np.array([1, 2, 3, 4, 5, 6])
    out = gather_windows(items, np.array([0, 4]), np.array([4, 6]), 3)
    assert out.tolist() == [[2, 3, 4], [0, 5, 6]]


def test_sorted_unique_is_np_unique() -> None:
    assert sorted_unique(np.array([5, 1, 5, 3, 1, 1], dtype=np.int64)).tolist() == [1, 3, 5]
    assert sorted_unique(np.array([], dtype=np.int64)).tolist() == []
    assert sorted_unique(np.array([7])).tolist() == [7]
    rng = np.random.default_rng(3)
    for high in (4, 1_000, 10**12):  # mostly repeats, some, almost none
        values = rng.integers(0, high, 5_000)
        got, expected = sorted_unique(values), np.unique(values)
        assert got.dtype == expected.dtype and np.array_equal(got, expected)


def test_history_index_tiny(tiny_file: Path) -> None:
    d = data.read_pairs(tiny_file)
    whole = HistoryIndex(d)
    assert whole.contains(np.array([1, 1, 2, 3]), np.array([5, 6, 6, 1])).tolist() == [True, False, True, False]
    prefix = HistoryIndex(d, data.leave_one_out(d).train_len)  # user 1's first 3 items only
    assert prefix.contains(np.array([1, 1]), np.array([3, 4])).tolist() == [True, False]
    assert whole.n_distinct[1:].tolist() == [5, 2, 4]


def test_distinct_eval_negatives(wiki: data.SequenceData) -> None:
    index = HistoryIndex(wiki)
    users = np.arange(1, wiki.n_users + 1)
    negs = sample_negatives(np.random.default_rng(0), index, users, 100, distinct=True)
    assert negs.shape == (wiki.n_users, 100)
    assert all(len(set(row)) == 100 for row in negs[:500].tolist())
    users_b = np.broadcast_to(users[:, None], negs.shape)
    assert not index.contains(users_b, negs).any()
