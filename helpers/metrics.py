"""Ranking metrics from ranks, where a rank is the number of competitors scored >= the target.

Ties count against the model: a constant scorer ranks every target last and gets
HR@k = 0, whatever the order of the candidates. NaN scores are an error, never a rank:
`NaN >= x` is False, so without the check a diverged model would rank every target first.
Full ranks are counted block by block of items (`blockwise_full_ranks`), so a catalogue of any
size needs the memory of one block.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from helpers.errors import NonFiniteError

#: The item id of the padding: a column of the full scores, never a ranked item.
PADDING = 0


def sampled_ranks(scores: torch.Tensor) -> torch.Tensor:
    """Ranks for (B, 1 + N) scores whose column 0 is the held-out item; every score must be finite."""
    if not torch.isfinite(scores).all():
        bad = int((~torch.isfinite(scores)).sum())
        raise NonFiniteError(f"{bad} of {scores.numel()} sampled scores are NaN or infinite")
    return (scores[:, 1:] >= scores[:, :1]).sum(dim=1)


def full_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Ranks of `targets` (B,) among all columns of `scores` (B, n_items + 1), itself excluded.

    Column 0 (the padding) is never a competitor, whatever it holds; removed items may be -inf.
    NaN or +inf in any other column, or a target that is not finite, is an error.
    """
    return blockwise_full_ranks(lambda items: scores[:, items], targets, [(0, scores.shape[1])])


def blockwise_full_ranks(
    score: Callable[[torch.Tensor], torch.Tensor], targets: torch.Tensor, blocks: Sequence[tuple[int, int]],
    removed: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """`full_ranks` of the scores `score(items)` (B, C) gives for blocks of item ids, one block at a time.

    `blocks` are the [start, end) ranges that cover the columns; `removed`, (rows, items) pairs to score
    -inf (a user's history; never the target). A rank is the count of other real items (ids from 1: item 0,
    the padding, is excluded here, whatever the scorer gives it) scoring at least the target's score, which
    comes from `score(targets)`; NaN or +inf in any block (after removal), or a target that is not finite,
    is an error naming the counts over all blocks.
    """
    target_scores = score(targets).float().diagonal()
    rows = torch.arange(targets.shape[0], device=targets.device)
    ranks = torch.zeros_like(targets)
    bad, total = 0, 0
    for start, end in blocks:
        items = torch.arange(start, end, device=targets.device)
        block = score(items).float().clone()
        if start <= PADDING < end:
            block[:, PADDING - start] = float("-inf")  # no item: never a competitor
        if removed is not None:
            inside = (removed[1] >= start) & (removed[1] < end)
            block[removed[0][inside], removed[1][inside] - start] = float("-inf")
        bad += int((torch.isnan(block) | torch.isposinf(block)).sum())
        total += block.numel()
        own = (targets >= start) & (targets < end)
        block[rows[own], targets[own] - start] = float("-inf")  # the target is not its own competitor
        ranks += (block >= target_scores[:, None]).sum(dim=1)
    if bad or not torch.isfinite(target_scores).all():
        raise NonFiniteError(f"{bad} of {total} scores are NaN or +inf, or a held-out item's score is not finite")
    return ranks


def near_tie_tolerance(n_users: int, flips: int = 3) -> float:
    """Largest change of NDCG@10 or HR@10 when `flips` users' ranks move by one place.

    Other CPU kernels reorder float sums; a near-tie between the held-out item and a
    competitor may then flip. One flip moves HR@10 by 1 / n_users and NDCG@10 by at most
    (1 - 1 / log2(3)) / n_users < 1 / n_users. A broken loader moves them by far more.
    """
    return flips / n_users


def summarize(ranks: np.ndarray, ks: tuple[int, ...] = (10,)) -> dict[str, float]:
    """NDCG@k, HR@k for each k, and MRR, averaged over all users (0 for misses)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        raise ValueError("no users to evaluate")
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks < k
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean())
        out[f"hr@{k}"] = float(hit.mean())
    out["mrr"] = float((1.0 / (ranks + 1.0)).mean())
    return out
