"""Metrics on hand-computed cases, and evaluation invariants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import baselines, data
from helpers.errors import ConfigError, NonFiniteError
from helpers.evaluate import Evaluator
from helpers.metrics import full_ranks, sampled_ranks, summarize


def test_summarize_by_hand() -> None:
    ranks = np.array([0, 1, 9, 10, 50])
    m = summarize(ranks, ks=(1, 10))
    assert m["hr@1"] == pytest.approx(1 / 5)
    assert m["hr@10"] == pytest.approx(3 / 5)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / np.log2(3) + 1 / np.log2(11)) / 5)
    assert m["ndcg@1"] == pytest.approx(1 / 5)
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 10 + 1 / 11 + 1 / 51) / 5)


def test_ties_count_against_the_model() -> None:
    scores = torch.tensor([[1.0, 1.0, 0.0, 2.0], [5.0, 1.0, 2.0, 3.0]])
    assert sampled_ranks(scores).tolist() == [2, 0]  # tie and a higher one; nothing above
    full = torch.tensor([[float("-inf"), 1.0, 1.0, 0.5], [float("-inf"), 3.0, 2.0, 1.0]])
    assert full_ranks(full, torch.tensor([2, 1])).tolist() == [1, 0]


class Constant:
    """Scores every item the same."""

    maxlen = 10

    def predict(self, users, seqs, candidates):
        shape = (users.shape[0], 21) if candidates is None else candidates.shape
        return torch.zeros(shape)


class Oracle:
    """Knows the held-out item."""

    maxlen = 10

    def __init__(self, targets: np.ndarray) -> None:
        self.targets = torch.from_numpy(targets)

    def predict(self, users, seqs, candidates):
        t = self.targets[users]
        if candidates is None:
            return torch.nn.functional.one_hot(t, 21).float()
        return (candidates == t[:, None]).float()


@pytest.fixture
def small_split(tmp_path: Path) -> data.Split:
    rng = np.random.default_rng(0)
    lines = [f"{u} {i}" for u in range(1, 41) for i in rng.choice(np.arange(1, 21), size=8, replace=False)]
    path = tmp_path / "small.txt"
    path.write_text("\n".join(lines) + "\n")
    return data.leave_one_out(data.read_pairs(path))


@pytest.mark.parametrize("protocol", ["sampled", "full"])
def test_constant_and_perfect_scorers(small_split: data.Split, protocol: str) -> None:
    kw = {"n_negatives": 10} if protocol == "sampled" else {}
    for which in ("valid", "test"):
        ev = Evaluator(small_split, which, protocol, **kw)
        assert ev(Constant())["hr@10"] == 0.0
        perfect = ev(Oracle(small_split.targets(which)))
        assert perfect["hr@10"] == perfect["ndcg@10"] == perfect["mrr"] == 1.0
        assert perfect["users"] == 40


class NaNScorer:
    """A diverged model: every score NaN (optionally only for some users)."""

    maxlen = 10

    def __init__(self, users: set[int] | None = None) -> None:
        self.users = users

    def predict(self, users, seqs, candidates):
        shape = (users.shape[0], 21) if candidates is None else candidates.shape
        scores = torch.rand(shape)
        bad = torch.ones(users.shape[0], dtype=torch.bool) if self.users is None else torch.tensor(
            [int(u) in self.users for u in users])
        scores[bad] = float("nan")
        return scores


def test_nan_scores_are_errors_not_ranks() -> None:
    nan = torch.full((2, 4), float("nan"))
    with pytest.raises(NonFiniteError, match="8 of 8 sampled scores"):
        sampled_ranks(nan)
    with pytest.raises(NonFiniteError, match="NaN or \\+inf"):
        full_ranks(nan, torch.tensor([1, 2]))
    inf_target = torch.tensor([[float("-inf"), float("-inf"), 1.0]])  # the held-out item 1 was removed
    with pytest.raises(NonFiniteError, match="held-out item's score"):
        full_ranks(inf_target, torch.tensor([1]))


@pytest.mark.parametrize("protocol", ["sampled", "full"])
@pytest.mark.parametrize("bad_users", [None, {7}])
def test_nan_scorer_raises_naming_the_split(small_split: data.Split, protocol: str, bad_users) -> None:
    kw = {"n_negatives": 10} if protocol == "sampled" else {}
    ev = Evaluator(small_split, "valid", protocol, **kw)
    with pytest.raises(NonFiniteError, match=f"valid split \\({protocol} protocol\\).*diverged"):
        ev(NaNScorer(bad_users))


def test_sampled_negatives_fixed_by_seed(small_split: data.Split) -> None:
    a = Evaluator(small_split, "test", "sampled", seed=3, n_negatives=10)
    b = Evaluator(small_split, "test", "sampled", seed=3, n_negatives=10, batch_size=7)
    c = Evaluator(small_split, "test", "sampled", seed=4, n_negatives=10)
    assert np.array_equal(a.negatives, b.negatives) and not np.array_equal(a.negatives, c.negatives)
    pop = baselines.Popularity(small_split, maxlen=10)
    assert a(pop) == b(pop)  # batch size does not change results
    # negatives exclude every item the user ever had, valid and test included
    for u in (1, 17, 40):
        assert not set(a.negatives[u]) & set(small_split.data.user_items(u).tolist())


@pytest.mark.parametrize("protocol", ["sampled", "full"])
def test_restricted_is_the_evaluation_of_those_users(small_split: data.Split, protocol: str) -> None:
    """`restricted(users)` is `Evaluator(..., users=users)`: the same users in the same order, the same
    negatives (the very array, not drawn again) and the same ranks; the whole evaluation is untouched."""
    kw = {"n_negatives": 10} if protocol == "sampled" else {}
    whole = Evaluator(small_split, "test", protocol, **kw)
    users = np.array([40, 3, 17, 9, 99])  # unordered, and 99 is nobody
    part, direct = whole.restricted(users), Evaluator(small_split, "test", protocol, users=users, **kw)
    assert part.users.tolist() == direct.users.tolist() and sorted(part.users.tolist()) == [3, 9, 17, 40]
    assert part.negatives is whole.negatives and whole.users.size == 40
    if protocol == "sampled":
        assert np.array_equal(part.negatives[users[:4]], direct.negatives[users[:4]])
    pop = baselines.Popularity(small_split, maxlen=10)
    assert np.array_equal(part.ranks(pop), direct.ranks(pop))


@pytest.mark.parametrize("protocol", ["sampled", "full"])
def test_model_ranks_do_not_depend_on_the_batch_size(small_split: data.Split, protocol: str) -> None:
    """Each user's scores come from their own row, so every batch size gives the same ranks."""
    from helpers.model import SSEPT
    from helpers.settings import SSEPTConfig

    torch.manual_seed(0)
    model = SSEPT(SSEPTConfig(n_users=40, n_items=20, item_dim=8, user_dim=4, maxlen=10)).eval()
    kw = {"n_negatives": 10} if protocol == "sampled" else {}
    ranks = [Evaluator(small_split, "test", protocol, batch_size=size, **kw).ranks(model) for size in (None, 3, 7, 64)]
    for other in ranks[1:]:  # other batch shapes may pick other kernels: allow one near-tie to flip
        moved = np.abs(other - ranks[0])
        assert moved.max() <= 1 and (moved > 0).sum() <= 1
    assert len(set(ranks[0].tolist())) > 3  # a real spread of ranks, not a constant


def test_full_ranking_removes_history(tmp_path: Path) -> None:
    path = tmp_path / "h.txt"
    # user 1 history 1,2,3 then valid 4, test 5
    path.write_text("1 1\n1 2\n1 3\n1 4\n1 5\n2 5\n2 4\n2 3\n2 2\n2 1\n")
    split = data.leave_one_out(data.read_pairs(path))

    class Fixed:
        maxlen = 5

        def predict(self, users, seqs, candidates):  # items 1..3 best, then 5, then 4
            return torch.tensor([[float("-inf"), 9.0, 8.0, 7.0, 1.0, 2.0]] * users.shape[0])

    ranks_removed = Evaluator(split, "test", "full").ranks(Fixed())
    ranks_kept = Evaluator(split, "test", "full", remove_history=False).ranks(Fixed())
    users = Evaluator(split, "test", "full").users
    r = dict(zip(users.tolist(), ranks_removed.tolist()))
    k = dict(zip(users.tolist(), ranks_kept.tolist()))
    assert r[1] == 0 and k[1] == 3  # test item 5 behind 1, 2, 3 unless they are removed
    # user 2: history 5,4,3 and test item 1 -> rank 0 either way (1 scores highest)
    assert r[2] == 0 and k[2] == 0


def test_baselines_by_hand(tmp_path: Path) -> None:
    path = tmp_path / "b.txt"
    path.write_text("1 1\n1 2\n1 2\n1 2\n1 2\n2 3\n2 1\n2 1\n2 3\n2 1\n")
    split = data.leave_one_out(data.read_pairs(path))
    users = torch.tensor([1, 2])
    seqs = torch.tensor([[1, 2, 2], [3, 1, 1]])
    rep = baselines.RepeatLast(3, 5).predict(users, seqs, None)
    assert rep[:, 1:].tolist() == [[0, 1, 0], [1, 0, 0]]
    freq = baselines.MostFrequent(3, 5).predict(users, seqs, torch.tensor([[1, 2, 3], [1, 2, 3]]))
    assert freq.tolist() == [[1, 2, 0], [2, 0, 1]]
    pop = baselines.Popularity(split, 5)
    assert pop.counts.tolist() == [0, 3, 2, 1]  # train prefixes: [1,2,2] and [3,1,1]
    # repeat-last is perfect on user 1 (test item 2 = last item of 1,2,2,2)
    ranks = Evaluator(split, "test", "full", remove_history=False).ranks(baselines.RepeatLast(3, 5))
    assert ranks.tolist()[0] == 0


def test_by_target_popularity_by_hand(tmp_path: Path) -> None:
    """Four users; items 1 and 2 are held out. Item 1 occurs 3 times in training, item 2 once."""
    from helpers.evaluate import by_target_popularity

    path = tmp_path / "p.txt"
    rows = {1: [1, 3, 4, 1], 2: [1, 5, 6, 2], 3: [1, 7, 8, 1], 4: [2, 9, 3, 2]}
    path.write_text("".join(f"{u} {i}\n" for u, items in rows.items() for i in items))
    split = data.leave_one_out(data.read_pairs(path))
    ev = Evaluator(split, "test", "full")
    assert ev.targets_all[ev.users].tolist() == [1, 2, 1, 2]
    table = by_target_popularity(ev, np.array([0, 20, 5, 9]), groups=2)
    assert table.index.tolist() == ["1: 1-1", "2: 3-3"]  # item 2 (rarest) first
    assert table["users"].tolist() == [2, 2]
    assert table["hr@10"].tolist() == [0.5, 1.0]  # ranks 20, 9 for item 2; 0, 5 for item 1
    assert table.loc["2: 3-3", "mrr"] == pytest.approx((1 + 1 / 6) / 2)
    with pytest.raises(ConfigError, match="evaluator has 4 users"):
        by_target_popularity(ev, np.zeros(3), groups=2)
    # Three groups of four users cannot be equal without splitting a count: a count stays in one group.
    table = by_target_popularity(ev, np.array([0, 20, 5, 9]), groups=3)
    assert table.index.tolist() == ["1: 1-1", "2: 3-3"] and table["users"].tolist() == [2, 2]
