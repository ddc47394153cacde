"""Ranking metrics from ranks, where a rank is the number of competitors scored >= the target.

Ties count against the model: a constant scorer ranks every target last and gets
HR@k = 0, whatever the order of the candidates.
"""

from __future__ import annotations

import numpy as np
import torch


def sampled_ranks(scores: torch.Tensor) -> torch.Tensor:
    """Ranks for (B, 1 + N) scores whose column 0 is the held-out item."""
    return (scores[:, 1:] >= scores[:, :1]).sum(dim=1)


def full_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Ranks of `targets` (B,) among all columns of `scores` (B, n_items + 1), itself excluded."""
    target_scores = scores.gather(1, targets[:, None])
    return (scores >= target_scores).sum(dim=1) - 1


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
