"""Every public scoring path of `SSEPT` gives the same scores: every item (`score_all`, `predict(..., None)`),
blocks of items (`block_scorer`), candidates shared by a batch (`score_shared`) and candidates per row
(`predict`, `score_items`), with and without the user part and the copy bonus.

Two kinds of check. On a random model the paths agree up to float32 rounding, scaled to the largest score
(a matrix product and a per-candidate dot product sum the same terms in other orders). With a zero item table
the item term is exactly zero, so what is left (the user term and the copy bonus) must come out bit for bit
the same in every path.
"""

from __future__ import annotations

import pytest
import torch

from helpers.layers import sum_by_item
from helpers.model import SSEPT
from helpers.settings import SSEPTConfig
from tests.tolerance import FLOAT32_REL

N_ITEMS = 20
USERS = torch.tensor([1, 2, 5])
#: Padding first in row 0, an item repeated (3) in row 0 and twice in a row (4) in row 1, no padding in row 2.
SEQS = torch.tensor([[0, 3, 5, 3, 9, 7], [4, 4, 8, 2, 6, 11], [1, 2, 3, 4, 5, 6]])
#: Shared candidates: repeats, window items of every row, items seen nowhere, and the padding id.
SHARED = torch.tensor([3, 7, 7, 12, 4, 0, 20, 6, 1, 3])
#: Candidates per row (B, C): each row's own window items, an unseen item and a repeat.
PER_ROW = torch.tensor([[7, 3, 5, 15, 3], [11, 4, 8, 15, 4], [6, 1, 2, 19, 6]])

VARIANTS = [
    pytest.param({"user_dim": 4}, id="ssept"),
    pytest.param({"user_dim": 0}, id="sasrec"),
    pytest.param({"user_dim": 4, "copy_slots": 3}, id="ssept-copy"),
    pytest.param({"user_dim": 0, "copy_slots": 3}, id="sasrec-copy"),
]


def _model(zero_items: bool = False, **kw) -> SSEPT:
    """A tiny model with random weights (and a copy bonus of distinct values when it has one)."""
    torch.manual_seed(0)
    config = {"n_users": 7, "n_items": N_ITEMS, "item_dim": 8, "maxlen": 6, "num_blocks": 2, "num_heads": 2, **kw}
    model = SSEPT(SSEPTConfig(**config)).eval()
    with torch.no_grad():
        if model.copy_bonus is not None:
            model.copy_bonus.copy_(torch.tensor([1.5, -0.7, 0.3, 0.2]))
        if zero_items:
            model.item_emb.weight.zero_()
    return model


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float32 rounding of the largest finite |entry| of `expected`; infinities must match."""
    finite = expected.detach()[torch.isfinite(expected)]
    scale = float(finite.abs().max()) if finite.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=FLOAT32_REL, atol=FLOAT32_REL * max(scale, 1e-12))


def _paths(model: SSEPT) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each path's scores and what they must equal, read from one path that scores every item."""
    with torch.no_grad():
        hidden = model(USERS, SEQS)  # (B, L, d)
        every = model.score_all(hidden, USERS, SEQS)  # (B, L, n_items + 1)
        real = SEQS > 0
        rows = real.nonzero(as_tuple=True)[0]
        last = model(USERS, SEQS, last_only=True)[:, -1]  # (B, d)
        full = model.predict(USERS, SEQS, None)  # (B, n_items + 1)
        per_position = torch.randint(1, N_ITEMS + 1, SEQS.shape, generator=torch.Generator().manual_seed(1))
        per_position[:, -1] = SEQS[:, -1]  # the item just seen, which gains the largest bonus
        score = model.block_scorer(USERS, SEQS)
        blocks = torch.cat([score(torch.arange(a, b)) for a, b in ((0, 7), (7, 15), (15, N_ITEMS + 1))], dim=1)
        return {
            "score_all at=": (model.score_all(hidden[real], USERS[rows], SEQS, at=real), every[real]),
            "score_items": (model.score_items(hidden, USERS, per_position, SEQS),
                            every.gather(-1, per_position[..., None])[..., 0]),
            "score_shared every position": (model.score_shared(hidden, USERS, SHARED, SEQS)[..., SHARED > 0],
                                            every[..., SHARED[SHARED > 0]]),
            "score_all last": (model.score_all(last, USERS, SEQS), full),
            "predict vs every position": (full, every[:, -1]),
            "score_shared last": (model.score_shared(last, USERS, SHARED, SEQS)[:, SHARED > 0],
                                  full[:, SHARED[SHARED > 0]]),
            "predict per row": (model.predict(USERS, SEQS, PER_ROW), full.gather(1, PER_ROW)),
            "block_scorer blocks": (blocks, full),
            "block_scorer shared": (score(SHARED), full[:, SHARED]),
        }


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_scoring_path_agrees_with_scoring_every_item(variant: dict) -> None:
    for name, (got, want) in _paths(_model(**variant)).items():
        assert torch.equal(torch.isfinite(got), want != float("-inf")), name  # -inf only at padding
        _close(got, want)


@pytest.mark.parametrize("variant", VARIANTS)
def test_user_term_and_copy_bonus_are_added_identically_in_every_path(variant: dict) -> None:
    """With a zero item table every score is the user term plus the copy bonus: bit for bit the same in
    every path that reads the same hidden states."""
    model = _model(zero_items=True, **variant)
    for name, (got, want) in _paths(model).items():
        if name == "predict vs every position":  # other hidden states (the last position computed alone)
            continue
        assert torch.equal(got, want), name


def test_the_paths_differ_where_the_user_or_the_bonus_says() -> None:
    """The exact check above is not vacuous: the user term and the copy bonus move the scores."""
    base = _model(zero_items=True, user_dim=0).predict(USERS, SEQS, PER_ROW)
    assert torch.equal(base, torch.zeros_like(base))
    bonus = _model(zero_items=True, user_dim=0, copy_slots=3).predict(USERS, SEQS, PER_ROW)
    # Row 0 (window ... 3 9 7): 7 at d=0, 3 at d=2, 5 at d=3 (slot R), 15 unseen, 3 again.
    assert bonus[0].tolist() == pytest.approx([1.5, 0.3, 0.2, 0.0, 0.3])
    user = _model(zero_items=True, user_dim=4).predict(USERS, SEQS, PER_ROW)
    assert (user != 0).all() and torch.equal(user, user[:, :1].expand_as(user))  # one term for every candidate


def test_padding_is_minus_infinity_where_the_catalogue_is_scored() -> None:
    model = _model(copy_slots=3)
    assert torch.isneginf(model.predict(USERS, SEQS, None)[:, 0]).all()
    assert torch.isneginf(model.block_scorer(USERS, SEQS)(SHARED)[:, SHARED == 0]).all()
    hidden = model(USERS, SEQS)
    assert torch.isneginf(model.score_all(hidden, USERS, SEQS)[..., 0]).all()


def test_sum_by_item_per_row_candidates_by_hand() -> None:
    """Candidates per row (..., C), repeats allowed, give what comparing every slot with every candidate does."""
    window = torch.tensor([[[3, 5, 3, 0], [1, 1, 2, 9]], [[7, 7, 7, 7], [0, 0, 0, 4]]])
    values = torch.tensor([[[1.0, 2.0, 4.0, 8.0], [16.0, 32.0, 64.0, 128.0]],
                           [[1.0, 2.0, 4.0, 8.0], [3.0, 5.0, 7.0, 11.0]]])
    items = torch.tensor([[[3, 5, 4, 3], [1, 9, 2, 1]], [[7, 0, 7, 8], [0, 4, 0, 2]]])
    by_hand = (values[..., None, :] * (window[..., None, :] == items[..., :, None])).sum(-1)
    assert by_hand[0, 0].tolist() == [5.0, 2.0, 0.0, 5.0]
    assert torch.equal(sum_by_item(window, values, items), by_hand)
    # Shared candidates (C,) are the per-row case with the same row everywhere.
    shared = torch.tensor([7, 3, 0, 1, 3])
    assert torch.equal(sum_by_item(window, values, shared), sum_by_item(window, values, shared.expand(2, 2, 5)))
