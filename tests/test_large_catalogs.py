"""Catalogues too large for the full softmax: the sampled softmax with shared negatives, and full ranking
and recommendations computed over blocks of items, on tiny hand-made data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import baselines, data, recommend
from helpers.checkpoint import read_checkpoint
from helpers.errors import ConfigError, NonFiniteError
from helpers.evaluate import Evaluator, input_windows, item_blocks
from helpers.layers import sum_by_item
from helpers.losses import compute_loss, loss_sum
from helpers.metrics import blockwise_full_ranks
from helpers.model import SSEPT
from helpers.sampler import SharedNegatives, TrainSampler
from helpers.settings import SSEPTConfig, TrainConfig
from helpers.train import fit
from helpers.train import main as train_main
from tests.test_train import _synthetic as walks
from tests.tolerance import assert_close_scaled

N_ITEMS = 12


def _model(user_dim: int = 4, copy_slots: int = 0, n_items: int = N_ITEMS, n_users: int = 3,
           seed: int = 0) -> SSEPT:
    """A small random model without dropout; a copy bonus with random values if `copy_slots`."""
    torch.manual_seed(seed)
    model = SSEPT(SSEPTConfig(n_users=n_users, n_items=n_items, item_dim=4, user_dim=user_dim, maxlen=4,
                              num_blocks=1, dropout=0.0, copy_slots=copy_slots))
    if copy_slots:
        with torch.no_grad():
            model.copy_bonus.copy_(torch.randn(copy_slots + 1))
    return model


USERS = torch.tensor([1, 2])
SEQ = torch.tensor([[0, 3, 4, 3], [1, 2, 5, 7]])
POS = torch.tensor([[0, 4, 6, 2], [2, 5, 7, 9]])  # one padded position


# --------------------------------------------------------------------------- the sampled softmax


def _by_hand(model: SSEPT, shared: list[int], log_q: np.ndarray | None) -> float:
    """Sum over the real positions of -log softmax(positive | positive and shared negatives), each
    logit minus log q of its item, a negative equal to the positive left out."""
    hidden = model(USERS, SEQ)
    scores = model.score_all(hidden, USERS, SEQ)  # (B, L, n_items + 1), copy bonus included
    total = 0.0
    for b in range(2):
        for t in range(4):
            target = int(POS[b, t])
            if target == 0:
                continue
            items = [target] + [j for j in shared if j != target]
            logits = torch.stack([scores[b, t, j] - (float(log_q[j]) if log_q is not None else 0.0) for j in items])
            total -= float(torch.log_softmax(logits, 0)[0].detach())
    return total


@pytest.mark.parametrize(("user_dim", "copy_slots"), [(4, 2), (0, 0)], ids=["ssept-copy", "sasrec"])
def test_sampled_softmax_by_hand(user_dim: int, copy_slots: int) -> None:
    """Negatives 4 and 9 equal targets of some positions (masked there), 3 is in a window (copy bonus);
    popularity log-probabilities by hand: (count + 1) / sum."""
    model = _model(user_dim, copy_slots).eval()
    shared = [4, 9, 3, 11, 4]  # drawn with replacement: 4 twice
    counts = np.array([0, 5, 0, 2, 7, 1, 0, 0, 3, 1, 0, 2, 4])
    weights = counts[1:] + 1.0
    log_q = np.concatenate([[0.0], np.log(weights / weights.sum())]).astype(np.float32)
    assert np.allclose(SharedNegatives(5, N_ITEMS, counts).log_q, log_q)
    pos_q, neg_q = torch.from_numpy(log_q[POS.numpy()]), torch.from_numpy(log_q[shared])
    got = loss_sum(model, USERS, SEQ, POS, torch.tensor(shared), "sampled-softmax", False, (pos_q, neg_q))
    assert got.item() == pytest.approx(_by_hand(model, shared, log_q), rel=1e-5)
    uniform = loss_sum(model, USERS, SEQ, POS, torch.tensor(shared), "sampled-softmax", False)
    assert uniform.item() == pytest.approx(_by_hand(model, shared, None), rel=1e-5)


@pytest.mark.parametrize(("user_dim", "copy_slots"), [(4, 2), (0, 0)], ids=["ssept-copy", "sasrec"])
def test_every_item_as_negative_is_the_full_softmax(user_dim: int, copy_slots: int) -> None:
    """With each item once among the shared negatives, the one equal to a position's target is masked and
    the rest are every other item: the sampled softmax is then the full softmax (`--loss ce`), exactly the
    same sum up to float rounding. With the log-Q correction it is the full softmax of the corrected logits."""
    model = _model(user_dim, copy_slots).eval()
    every = torch.arange(1, N_ITEMS + 1)
    ce = loss_sum(model, USERS, SEQ, POS, None, "ce", dense=False)
    sampled = loss_sum(model, USERS, SEQ, POS, every.flip(0), "sampled-softmax", False)
    assert sampled.item() == pytest.approx(ce.item(), rel=1e-5)
    log_q = torch.log(torch.arange(1.0, N_ITEMS + 2) / 100.0)
    log_q[0] = 0.0
    corrected = loss_sum(model, USERS, SEQ, POS, every, "sampled-softmax", False, (log_q[POS], log_q[every]))
    logits = model.score_all(model(USERS, SEQ), USERS, SEQ) - log_q
    want = torch.nn.functional.cross_entropy(logits.flatten(0, 1), POS.flatten(), ignore_index=0, reduction="sum")
    assert corrected.item() == pytest.approx(want.item(), rel=1e-5)


def test_gradient_reaches_only_the_candidates_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the rows of the inputs, targets and shared negatives get a gradient, and the whole catalogue
    is never scored (`score_all` is not called)."""
    model = _model(user_dim=4, copy_slots=2, n_items=50)
    monkeypatch.setattr(SSEPT, "score_all", lambda *a, **k: pytest.fail("the sampled softmax scored every item"))
    shared = torch.tensor([20, 31, 4, 44])
    loss_sum(model, USERS, SEQ, POS, shared, "sampled-softmax", False).backward()
    touched = set((model.item_emb.weight.grad.abs().sum(1) > 0).nonzero().flatten().tolist())
    allowed = set(SEQ.flatten().tolist()) | set(POS.flatten().tolist()) | set(shared.tolist())
    assert touched <= allowed - {0}
    assert {20, 31, 44} <= touched  # negatives that are neither input nor target


def test_sum_by_item_by_hand() -> None:
    window = torch.tensor([[3, 0, 5, 3], [1, 1, 2, 0]])
    values = torch.tensor([[1.0, 2.0, 4.0, 8.0], [16.0, 32.0, 64.0, 128.0]])
    items = torch.tensor([3, 1, 3, 7, 0, 2])  # repeats, a miss, padding
    assert sum_by_item(window, values, items).tolist() == [[9, 0, 9, 0, 2, 0], [0, 48, 0, 0, 128, 64]]


# --------------------------------------------------------------------------- drawing the shared negatives


def _synthetic(path: Path, users: int = 60, items: int = 30, seed: int = 0) -> data.Split:
    """Users walk through items in steps of -1, 0 or 1 (repeats included), 4 to 13 rows each."""
    return data.leave_one_out(data.read_pairs(walks(path, users, items, seed, lengths=(4, 14), steps=(0, 3))))


def test_shared_negatives_are_drawn_last_reproducibly_and_shared_by_pieces(tmp_path: Path) -> None:
    split = _synthetic(tmp_path / "s.txt")
    kw = {"p_user": 0.5, "p_item": 0.2, "p_sub": 0.3}
    users = np.arange(1, 9)
    plain = TrainSampler(split, 8, 6, np.random.default_rng(4), **kw).make_batch(users)
    first = TrainSampler(split, 8, 6, np.random.default_rng(4), **kw, negatives=5, negative_sampling="popularity")
    batch = first.make_batch(users)
    for name in ("users", "seq", "pos", "neg"):  # drawn last: the rest of the batch is drawn as without them
        assert np.array_equal(getattr(plain, name), getattr(batch, name))
    assert plain.shared_neg is None and batch.shared_neg.shape == (5,)
    assert np.array_equal(batch.shared_log_q, first.shared.log_q[batch.shared_neg])
    assert np.array_equal(batch.pos_log_q, np.where(batch.pos > 0, first.shared.log_q[batch.pos], 0.0))
    for piece in batch.split(3):  # every piece of a batch shares its negatives: the whole batch's gradient
        assert piece.shared_neg is batch.shared_neg and piece.pos_log_q.shape == piece.pos.shape
    runs = [list(TrainSampler(split, 8, 6, np.random.default_rng(seed), **kw, negatives=5).epoch())
            for seed in (4, 4, 5)]
    assert all(np.array_equal(a.shared_neg, b.shared_neg) for a, b in zip(runs[0], runs[1]))
    assert any(not np.array_equal(a.shared_neg, c.shared_neg) for a, c in zip(runs[0], runs[2]))
    assert runs[0][0].shared_log_q is None  # uniform draws need no correction


def test_popularity_draws_follow_the_counts() -> None:
    """counts 0 and 2 give weights 1 and 3: a uniform draw u maps to item 1 below 1/4, item 2 above."""

    class Fixed:
        def random(self, size: int) -> np.ndarray:
            return np.array([0.0, 0.24, 0.26, 0.999])[:size]

    negatives = SharedNegatives(1, 2, np.array([0, 0, 2]))
    negatives.count = 4
    assert negatives.draw(Fixed()).tolist() == [1, 1, 2, 2]
    assert np.allclose(np.exp(negatives.log_q[1:]), [0.25, 0.75])
    draws = SharedNegatives(20, 30).draw(np.random.default_rng(0))
    assert draws.min() >= 1 and draws.max() <= 30


def test_negatives_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs negatives >= 1.*--negatives R"):
        TrainConfig(loss="sampled-softmax")
    with pytest.raises(ConfigError, match="used only by loss sampled-softmax"):
        TrainConfig(negatives=5)
    with pytest.raises(ConfigError, match="negative_sampling must be one of"):
        TrainConfig(loss="sampled-softmax", negatives=5, negative_sampling="zipf")
    split = _synthetic(tmp_path / "s.txt")
    batch = TrainSampler(split, 4, 4, np.random.default_rng(0)).make_batch(np.array([1, 2]))
    with pytest.raises(ConfigError, match="needs the batch's shared negatives"):
        compute_loss(_model(n_items=split.data.n_items, n_users=split.data.n_users), batch, torch.device("cpu"),
                     TrainConfig(loss="sampled-softmax", negatives=3))


def test_negatives_of_at_least_the_catalogue_is_one_line_before_anything_is_written(tmp_path: Path,
                                                                                     capsys) -> None:
    split_file = tmp_path / "s.txt"
    n = _synthetic(split_file).data.n_items
    out = tmp_path / "run"
    argv = ["--dataset", str(split_file), "--out", str(out), "--quiet", "--model", "sasrec", "--item-dim", "8",
            "--maxlen", "6", "--num-blocks", "1", "--batch-size", "8", "--loss", "sampled-softmax"]
    with pytest.raises(ConfigError) as err:
        train_main([*argv, "--negatives", str(n)])
    assert str(err.value) == (f"negatives {n} must be below the number of items ({n}): pass --negatives {n - 1} "
                              "or fewer, or --loss ce for a softmax over every item")
    assert not out.exists()
    with pytest.raises(SystemExit):
        train_main(["--help"])
    shown = capsys.readouterr().out
    assert "--negatives" in shown and "--negative-sampling" in shown


def test_sampled_softmax_run_resumes_exactly(tmp_path: Path) -> None:
    """Stopped after 2 epochs and resumed to 4, a run ends with the weights and metrics of one that ran 4:
    the shared negatives come from the sampler's generator, saved with every checkpoint."""
    split = _synthetic(tmp_path / "s.txt", users=80)
    cfg = SSEPTConfig(split.data.n_users, split.data.n_items, item_dim=8, user_dim=4, maxlen=6, num_blocks=1,
                      copy_slots=2)
    train = {"batch_size": 16, "eval_every": 2, "eval_negatives": 10, "loss": "sampled-softmax", "negatives": 7,
             "negative_sampling": "popularity", "p_sub": 0.3, "seed": 3}
    whole = fit(split, cfg, TrainConfig(epochs=4, **train), tmp_path / "whole", progress=False)
    fit(split, cfg, TrainConfig(epochs=2, **train), tmp_path / "cut", progress=False)
    resumed = fit(split, cfg, TrainConfig(epochs=4, **train), tmp_path / "cut", resume=True, progress=False)
    a, b = read_checkpoint(tmp_path / "whole" / "last.pt"), read_checkpoint(tmp_path / "cut" / "last.pt")
    assert a["epoch"] == b["epoch"] == 4
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert whole.history["loss"].tolist() == resumed.history["loss"].tolist()
    assert whole.best == resumed.best


# --------------------------------------------------------------------------- blockwise full ranking


def _exact_items(model: SSEPT, seed: int = 0) -> SSEPT:
    """Item rows with one nonzero entry, 0.5, 1 or 2 with a sign, on one of two axes: every item score is one
    exact product plus the same user part and its copy bonus, so no kernel's order of additions can move a
    score or break a tie (and many items tie)."""
    n, d = model.item_emb.weight.shape
    g = torch.Generator().manual_seed(seed)
    table = torch.zeros(n, d)
    value = 2.0 ** torch.randint(-1, 2, (n,), generator=g) * (torch.randint(0, 2, (n,), generator=g) * 2 - 1)
    table[torch.arange(n), torch.randint(0, 2, (n,), generator=g)] = value
    table[0] = 0.0
    with torch.no_grad():
        model.item_emb.weight.copy_(table)
    return model.eval()


def _old_full_ranks(scorer, split: data.Split, ev: Evaluator, remove_history: bool) -> np.ndarray:
    """The whole-catalogue ranks as evaluation computed them before blocks: every item scored at once,
    the input history removed except the target, rank = items scoring >= the target, minus itself."""
    users = ev.users
    seqs = input_windows(split, users, ev.which, scorer.maxlen)
    scores = scorer.predict(torch.from_numpy(users), torch.from_numpy(seqs), None).float().numpy()
    targets = ev.targets_all[users]
    if remove_history:
        for row, u in enumerate(users):
            seen = split.data.user_items(u)[: ev.hist_len[u]]
            scores[row, [i for i in seen if i != targets[row]]] = -np.inf
    own = scores[np.arange(users.size), targets]
    assert ((scores == own[:, None]).sum(1) > 1).any()  # some target ties with another item
    return (scores >= own[:, None]).sum(1) - 1


SCORERS = {
    "ssept-copy": lambda split: _exact_items(_model(4, 3, split.data.n_items, split.data.n_users)),
    "sasrec": lambda split: _exact_items(_model(0, 0, split.data.n_items, split.data.n_users)),
    "popularity": lambda split: baselines.Popularity(split, 4),
    "repeat-last": lambda split: baselines.RepeatLast(split.data.n_items, 4),
    "most-frequent": lambda split: baselines.MostFrequent(split.data.n_items, 4),
    "unknown-random": lambda split: recommend.UnknownUser(
        _exact_items(_model(4, 2, split.data.n_items, split.data.n_users)), "random"),
}


@pytest.mark.parametrize("name", list(SCORERS))
@pytest.mark.parametrize("remove_history", [True, False])
def test_blockwise_full_ranks_equal_the_whole_catalogue(tmp_path: Path, name: str, remove_history: bool) -> None:
    """Block sizes 1, 4, 7 (31 columns: no divisor) and the whole catalogue at once give the old ranks exactly."""
    split = _synthetic(tmp_path / "s.txt")
    scorer = SCORERS[name](split)
    for which in ("valid", "test"):
        want = _old_full_ranks(scorer, split, Evaluator(split, which, "full", batch_size=16), remove_history)
        assert len(set(want.tolist())) > 1
        for size in (1, 4, 7, 31, 1000):
            ev = Evaluator(split, which, "full", remove_history=remove_history, batch_size=16, block_size=size)
            assert np.array_equal(ev.ranks(scorer), want), (which, size)


@pytest.mark.parametrize(("user_dim", "copy_slots"), [(4, 3), (0, 0)], ids=["ssept-copy", "sasrec"])
def test_block_scores_are_predicts_columns(user_dim: int, copy_slots: int) -> None:
    """Any weights: each block's scores are `predict`'s columns up to float rounding (a product with other
    shapes may take another kernel, which can move the last bits; hence the exact tables above)."""
    model = _model(user_dim, copy_slots, n_items=30, n_users=5).eval()
    users, seqs = torch.tensor([1, 4]), torch.tensor([[0, 3, 9, 3], [5, 6, 7, 8]])
    whole = model.predict(users, seqs, None)
    score = model.block_scorer(users, seqs)
    for size in (1, 7, 31):
        got = torch.cat([score(torch.arange(a, b)) for a, b in item_blocks(31, size)], dim=1)
        assert torch.isneginf(got[:, 0]).all()
        assert_close_scaled(got[:, 1:], whole[:, 1:])


def test_ties_count_against_the_model_across_blocks() -> None:
    """Items 2 and 5 tie with target 3 in other blocks, item 6 beats it; item 1 is removed (history)."""
    table = torch.tensor([[-np.inf, 7.0, 1.0, 1.0, 0.5, 1.0, 2.0]])
    score = lambda items: table[:, items]  # noqa: E731
    removed = (torch.tensor([0]), torch.tensor([1]))
    for size in (1, 2, 3, 7):
        blocks = item_blocks(7, size)
        assert blockwise_full_ranks(score, torch.tensor([3]), blocks, removed).tolist() == [3]
        assert blockwise_full_ranks(score, torch.tensor([3]), blocks).tolist() == [4]
    nan = table.clone()
    nan[0, 4] = float("nan")
    with pytest.raises(NonFiniteError, match="1 of 7 scores are NaN"):
        blockwise_full_ranks(lambda items: nan[:, items], torch.tensor([3]), item_blocks(7, 2))


def test_item_blocks_cover_the_columns_in_near_equal_parts() -> None:
    assert item_blocks(10, 4) == [(0, 3), (3, 6), (6, 10)]
    assert item_blocks(5, 1) == [(i, i + 1) for i in range(5)]
    assert item_blocks(5, 100) == [(0, 5)]


# --------------------------------------------------------------------------- blockwise top k


def _old_top_k(scorer, history: list[int], user: int | None, k: int, allow_repeats: bool) -> list[int]:
    """The top k as `recommend` computed it before blocks: every score, a stable sort of the allowed ids."""
    model = scorer.model if isinstance(scorer, recommend.UnknownUser) else scorer
    window = torch.tensor([history[-model.maxlen:]])
    scores = scorer.predict(torch.tensor([user or 0]), window, None)[0].float().numpy()
    allowed = np.ones(scores.size, dtype=bool)
    allowed[0] = False
    if not allow_repeats:
        allowed[history] = False
    candidates = np.flatnonzero(allowed)
    return candidates[np.argsort(-scores[candidates], kind="stable")[:k]].tolist()


@pytest.mark.parametrize(("user_dim", "copy_slots"), [(4, 3), (0, 0)], ids=["ssept-copy", "sasrec"])
def test_blockwise_top_k_equals_the_old_top_k(user_dim: int, copy_slots: int) -> None:
    model = _exact_items(_model(user_dim, copy_slots, n_items=30, n_users=5))
    history = [3, 7, 7, 1, 12, 5, 9]
    for user in (2, None):
        for allow_repeats in (False, True):
            want = _old_top_k(recommend.UnknownUser(model) if user is None else model, history, user, 12,
                              allow_repeats)
            for size in (1, 4, 7, 31, 1000):
                got = recommend.recommend(model, history, user, 12, allow_repeats, block_size=size)
                assert got.items.tolist() == want, (user, allow_repeats, size)
    scores = model.predict(torch.tensor([2]), torch.tensor([history[-4:]]), None)[0]
    ties = recommend.recommend(model, history, 2, 30, block_size=4)
    assert_close_scaled(torch.from_numpy(ties.scores), scores[ties.items])
    assert len(set(ties.scores.tolist())) < len(ties.scores)  # ties were broken, by the smaller id


def test_recommend_baseline_and_nan_blockwise() -> None:
    split = data.leave_one_out(data.SequenceData("c", 2, 6, np.array([0, 0, 3, 6], dtype=np.int64),
                                                 np.array([2, 3, 4, 4, 5, 4], dtype=np.int64)))
    pop = baselines.Popularity(split, 5)
    want = _old_top_k(pop, [1], None, 3, allow_repeats=False)
    assert want == [2, 4, 3]  # training counts 1, 1 and 0: ties by the smaller id
    for size in (1, 2, 4):
        assert recommend.recommend(pop, [1], k=3, block_size=size).items.tolist() == want
    model = _model(n_items=30, n_users=5).eval()
    with torch.no_grad():
        model.item_emb.weight[17] = float("nan")
    with pytest.raises(NonFiniteError, match="1 of 29 item scores are NaN"):
        recommend.recommend(model, [3], user=1, k=3, block_size=4)
