"""Trivial recommenders scored through the model's `predict` interface.

They let the same evaluation code rank them, so every table can show how much a
trained model adds over popularity or simply repeating what the user just did.
"""

from __future__ import annotations

import torch

from helpers.data import Split, item_popularity


class _Baseline:
    """Common part: a `maxlen` window and `predict(users, seqs, candidates)`."""

    name = "baseline"

    def __init__(self, n_items: int, maxlen: int) -> None:
        self.n_items, self.maxlen = n_items, maxlen

    def score_all(self, users: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
        """(B, n_items + 1) scores; subclasses implement this."""
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, users: torch.Tensor, seqs: torch.Tensor, candidates: torch.Tensor | None) -> torch.Tensor:
        """Scores of candidates (B, C), or of every item (B, n_items + 1, column 0 = -inf)."""
        scores = self.score_all(users, seqs).float()
        scores[:, 0] = float("-inf")
        return scores if candidates is None else scores.gather(1, candidates)


class Popularity(_Baseline):
    """Score = how often the item appears in the training sequences."""

    name = "popularity"

    def __init__(self, split: Split, maxlen: int = 200) -> None:
        super().__init__(split.data.n_items, maxlen)
        self.counts = torch.as_tensor(item_popularity(split.data, split.train_len), dtype=torch.float32)

    def score_all(self, users: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
        return self.counts.to(seqs.device).expand(seqs.shape[0], -1).clone()


class RepeatLast(_Baseline):
    """Score 1 for the user's last item, 0 for everything else (ties count against it)."""

    name = "repeat-last"

    def score_all(self, users: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
        scores = torch.zeros(seqs.shape[0], self.n_items + 1, device=seqs.device)
        return scores.scatter_(1, seqs[:, -1:], 1.0)


class MostFrequent(_Baseline):
    """Score = how often the item occurs in the user's input window."""

    name = "most-frequent"

    def score_all(self, users: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
        scores = torch.zeros(seqs.shape[0], self.n_items + 1, device=seqs.device)
        return scores.scatter_add_(1, seqs, torch.ones_like(seqs, dtype=scores.dtype))


#: The baselines' names (as they appear in result tables).
BASELINE_NAMES = (Popularity.name, RepeatLast.name, MostFrequent.name)


def all_baselines(split: Split, maxlen: int = 200) -> list[_Baseline]:
    """Popularity, repeat-last and most-frequent for this split."""
    n = split.data.n_items
    return [Popularity(split, maxlen), RepeatLast(n, maxlen), MostFrequent(n, maxlen)]
