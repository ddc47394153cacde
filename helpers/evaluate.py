"""Evaluate a model (or a baseline) on the validation or test split.

Protocols (see `docs/model.md`):
- `sampled`: the held-out item against 100 distinct items the user never interacted
  with, drawn once from a generator seeded by (seed, split), so numbers repeat exactly;
- `full`: every item, with the items of the user's input history removed by default
  (the held-out item itself is never removed). The catalogue is scored in blocks of items
  (`SCORE_BLOCK`) with a running count, so its size costs time, not memory.

Command line: `python -m helpers.evaluate --checkpoint PATH --dataset NAME
--protocol sampled|full --split valid|test [--seed S]` prints one JSON object; other data than the
checkpoint was trained on (by content, `SequenceData.digest`) is refused unless `--allow-other-data`.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from helpers.checkpoint import OTHER_DATA_FLAG, check_data
from helpers.data import Split, item_popularity, leave_one_out, load
from helpers.errors import CheckpointError, ConfigError, NonFiniteError
from helpers.history import HistoryIndex, gather_windows, sample_negatives
from helpers.metrics import blockwise_full_ranks, sampled_ranks, summarize
from helpers.settings import PROTOCOLS, SAMPLED_NEGATIVES, SELECTION_PROTOCOLS
from helpers.utils import EVAL_NEGATIVES_STREAM, get_device, run_cli

SPLITS = ("valid", "test")
#: Users per evaluation batch when none is given, on a CPU and elsewhere (see `batch_size_for`).
EVAL_BATCH_CPU, EVAL_BATCH_ELSEWHERE = 32, 256
#: Items scored at once when the whole catalogue is ranked (full protocol, recommendations): about
#: batch x SCORE_BLOCK floats at a time, whatever the catalogue's size. The fastest block size of those
#: measured on a million-item model, at a small fraction of the memory of scoring every item at once
#: (`python -m helpers.studies.large_catalogs`; docs/scale.md, "Evaluation at a million items"); the
#: ranks do not depend on it.
SCORE_BLOCK = 16384


class Scorer(Protocol):
    """Anything with a window length and `predict(users, seqs, candidates)`.

    With `candidates=None`, `predict` scores every item id 0..n_items (B, n_items + 1). Column 0 is the
    padding: its score is never read as an item's (the full ranking excludes it itself,
    `metrics.blockwise_full_ranks`), so a scorer need not write -inf there.

    A scorer may also have `block_scorer(users, seqs)`, a function from a block of item ids to their
    scores (`SSEPT.block_scorer`): then the whole catalogue is never scored at once (`catalogue_scorer`).
    """

    maxlen: int

    def predict(self, users: torch.Tensor, seqs: torch.Tensor, candidates: torch.Tensor | None) -> torch.Tensor:
        ...


class Evaluator:
    """Everything fixed about one evaluation (users, targets, negatives), reusable across epochs."""

    def __init__(
        self,
        split: Split,
        which: str = "valid",
        protocol: str = "sampled",
        seed: int = 0,
        n_negatives: int = SAMPLED_NEGATIVES,
        remove_history: bool = True,
        batch_size: int | None = None,
        users: np.ndarray | None = None,
        block_size: int = SCORE_BLOCK,
    ) -> None:
        """`block_size`: items scored at once in the full protocol (the ranks do not depend on it)."""
        if which not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, got {which!r}")
        if protocol not in SELECTION_PROTOCOLS:
            raise ConfigError(f"protocol must be one of {SELECTION_PROTOCOLS}, got {protocol!r}")
        if protocol == "full-keep":  # full ranking with the history kept, as one protocol name
            protocol, remove_history = "full", False
        self.split, self.which, self.protocol = split, which, protocol
        self.remove_history, self.batch_size = remove_history, batch_size
        if block_size < 1:
            raise ConfigError(f"block_size must be at least 1, got {block_size}")
        self.block_size = block_size
        eval_users = split.eval_users
        if users is not None:
            eval_users = np.intersect1d(eval_users, users)
        if eval_users.size == 0:
            raise ConfigError("no user has 3 or more rows, so there is nobody to evaluate")
        self.n_skipped = split.n_skipped
        hist_len = split.history_len(which)
        self.targets_all = split.targets(which)
        self.negatives: np.ndarray | None = None
        if protocol == "sampled":
            # Drawn for every evaluable user, then selected: a subset of users is ranked
            # against the same negatives as in the whole evaluation.
            rng = np.random.default_rng([seed, EVAL_NEGATIVES_STREAM[which]])
            negs = sample_negatives(rng, HistoryIndex(split.data), split.eval_users, n_negatives, distinct=True)
            self.negatives = np.zeros((split.data.n_users + 1, n_negatives), dtype=np.int64)
            self.negatives[split.eval_users] = negs
        # Shortest histories first, so each batch is trimmed to a similar width.
        self.users = eval_users[np.argsort(hist_len[eval_users], kind="stable")]
        self.hist_len = hist_len

    def restricted(self, users: np.ndarray) -> Evaluator:
        """This evaluation for those of `users` it evaluates, in its order and against its negatives: what
        `Evaluator(..., users=users)` gives, without drawing the negatives again."""
        part = copy.copy(self)
        part.users = self.users[np.isin(self.users, users)]
        return part

    def _batches(self, device: torch.device) -> list[np.ndarray]:
        size = self.batch_size or batch_size_for(device)
        return [self.users[i : i + size] for i in range(0, self.users.size, size)]

    def _history_pairs(self, users: np.ndarray, targets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, item) for the items of each user's input history, except the target (rows index `users`)."""
        data = self.split.data
        lengths = self.hist_len[users]
        rows = np.repeat(np.arange(users.size), lengths)
        first = np.repeat(data.offsets[users] - np.cumsum(lengths) + lengths, lengths)
        cols = data.items[first + np.arange(rows.size)]
        keep = cols != targets[rows]
        return torch.from_numpy(rows[keep]), torch.from_numpy(cols[keep])

    @torch.no_grad()
    def ranks(self, model: Scorer, device: torch.device | str | None = None, progress: bool = False) -> np.ndarray:
        """Rank of the held-out item for each user in `self.users` (that order).

        Raises `NonFiniteError`, naming the split and protocol, if any score is NaN (a
        diverged model), instead of turning it into a rank.
        """
        try:
            return self._ranks(model, device, progress)
        except NonFiniteError as err:
            raise NonFiniteError(f"evaluation on the {self.which} split ({self.protocol} protocol): {err}; "
                                 "the model has diverged") from None

    def _ranks(self, model: Scorer, device: torch.device | str | None, progress: bool) -> np.ndarray:
        if hasattr(model, "parameters"):
            device = device or next(model.parameters()).device
        device = torch.device(device or "cpu")
        check_fits(model, self.split)
        was_training = getattr(model, "training", False)
        if hasattr(model, "eval"):
            model.eval()
        out = []
        for users in tqdm(self._batches(device), desc=f"eval {self.which}/{self.protocol}", disable=not progress,
                          leave=False):
            seqs = input_windows(self.split, users, self.which, model.maxlen)
            targets = self.targets_all[users]
            u = torch.from_numpy(users).to(device)
            s = torch.from_numpy(seqs).to(device)
            if self.protocol == "sampled":
                cand = np.concatenate([targets[:, None], self.negatives[users]], axis=1)
                scores = model.predict(u, s, torch.from_numpy(cand).to(device)).float()
                out.append(sampled_ranks(scores).cpu())
            else:
                score, n_cols = catalogue_scorer(model, u, s)
                removed = None
                if self.remove_history:
                    removed = tuple(t.to(device) for t in self._history_pairs(users, targets))
                t = torch.from_numpy(targets).to(device)
                out.append(blockwise_full_ranks(score, t, item_blocks(n_cols, self.block_size), removed).cpu())
        if was_training:
            model.train()
        return torch.cat(out).numpy()

    def __call__(
        self, model: Scorer, device: torch.device | str | None = None, progress: bool = False
    ) -> dict[str, Any]:
        """Metrics dict: ndcg@k, hr@k, mrr, the number of users evaluated and skipped."""
        return {**summarize(self.ranks(model, device, progress)),
                "users": int(self.users.size), "skipped_users": self.n_skipped}


def by_target_popularity(evaluator: Evaluator, ranks: np.ndarray, groups: int = 5) -> pd.DataFrame:
    """Metrics of the evaluated users in up to `groups` groups by how often their held-out item occurs in
    the training part, rarest first. `ranks` are `evaluator.ranks(model)`.

    The groups are as near equal in size as whole counts allow: every user whose item has the same count is in
    the same group, so the groups' count ranges never overlap. Each row: the count range, the number of users,
    and `summarize`'s metrics.
    """
    split = evaluator.split
    if ranks.shape != evaluator.users.shape:
        raise ConfigError(f"ranks has shape {ranks.shape}, but the evaluator has {evaluator.users.size} users")
    popularity = item_popularity(split.data, split.train_len)[evaluator.targets_all[evaluator.users]]
    order = np.argsort(popularity, kind="stable")
    ordered = popularity[order]
    # Equal-size cut points, each moved back to the first user of its count so that no count is split.
    cuts = np.searchsorted(ordered, ordered[np.arange(1, groups) * ordered.size // groups], side="left")
    rows = {}
    for members in np.split(order, np.unique(cuts)):
        if members.size == 0:
            continue
        pop = popularity[members]
        rows[f"{len(rows) + 1}: {pop.min()}-{pop.max()}"] = {"users": members.size, **summarize(ranks[members])}
    frame = pd.DataFrame(rows).T
    frame.index.name = "held-out item's training count"
    return frame.astype({"users": int})


def batch_size_for(device: torch.device) -> int:
    """Users per evaluation batch when none is given: small on a CPU, larger elsewhere.

    On a CPU, smaller batches evaluate faster (docs/speed.md, "On the CPU"); a GPU is launch-bound,
    so fewer, larger batches suit it. The ranks do not depend on it: each user's scores come from
    their own row.
    """
    return EVAL_BATCH_CPU if device.type == "cpu" else EVAL_BATCH_ELSEWHERE


def item_blocks(n_cols: int, size: int) -> list[tuple[int, int]]:
    """[start, end) ranges of at most `size` item ids covering 0..n_cols - 1, of near-equal sizes (no tiny
    last block: on a CPU a product with very few columns can take another kernel)."""
    count = -(-n_cols // size)
    bounds = [i * n_cols // count for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def n_items_of(model: Scorer) -> int:
    """The scorer's largest item id: its config's, or its `n_items` (the baselines)."""
    config = getattr(model, "config", None)
    return int(config.n_items) if config is not None else int(model.n_items)


def catalogue_scorer(model: Scorer, users: torch.Tensor,
                     seqs: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
    """A function from a block of item ids (C,) to these users' scores (B, C), and the number of item
    columns (n_items + 1, padding included). With `block_scorer` each user's state is computed once and
    each block on demand; otherwise `predict(users, seqs, None)` is computed once and read by blocks."""
    if hasattr(model, "block_scorer"):
        return model.block_scorer(users, seqs), n_items_of(model) + 1
    scores = model.predict(users, seqs, None).float()
    return (lambda items: scores[:, items]), scores.shape[1]


def input_windows(split: Split, users: np.ndarray, which: str, maxlen: int) -> np.ndarray:
    """The model input for `users` at `which`: their last `maxlen` history items, trimmed to the longest."""
    hist_len = split.history_len(which)[users]
    start = split.data.offsets[users]
    width = int(min(maxlen, max(hist_len.max(), 1)))
    return gather_windows(split.data.items, start, start + hist_len, width)


def check_fits(model: Scorer, split: Split) -> None:
    """Refuse a model whose user or item table does not match the dataset."""
    config = getattr(model, "config", None)
    if config is None:
        return
    data = split.data
    if config.n_items != data.n_items or config.n_users != data.n_users:
        raise CheckpointError(
            f"model was built for {config.n_users} users and {config.n_items} items, but dataset "
            f"{data.name!r} has {data.n_users} users and {data.n_items} items"
        )


def compare(models: dict[str, Scorer], split: Split, which: str = "test", seed: int = 0) -> pd.DataFrame:
    """One row per model: NDCG@10, HR@10 and MRR under the sampled and the full protocol."""
    evaluators = {p: Evaluator(split, which, p, seed) for p in PROTOCOLS}
    rows = {}
    for name, model in models.items():
        row = {}
        for protocol, ev in evaluators.items():
            metrics = ev(model)
            row.update({(protocol, k): metrics[k] for k in ("ndcg@10", "hr@10", "mrr")})
        rows[name] = row
    frame = pd.DataFrame(rows).T
    frame.columns = pd.MultiIndex.from_tuples(frame.columns, names=["protocol", "metric"])
    return frame


def main(argv: list[str] | None = None) -> int:
    """Evaluate a checkpoint and print one JSON object."""
    from helpers.model import load_checkpoint

    parser = argparse.ArgumentParser(prog="python -m helpers.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint file (.pt)")
    parser.add_argument("--dataset", required=True, help="ml-1m, wiki1000, ml-100k or a path to a 'user item' file")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="sampled")
    parser.add_argument("--split", choices=SPLITS, default="test")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled negatives")
    parser.add_argument("--keep-history", action="store_true", help="full protocol: do not remove seen items")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: best available)")
    parser.add_argument(OTHER_DATA_FLAG, action="store_true",
                        help="evaluate on other data than the checkpoint was trained on (of the same sizes)")
    args = parser.parse_args(argv)
    device = get_device(args.device)
    model, ckpt = load_checkpoint(args.checkpoint, device)
    split = leave_one_out(load(args.dataset))
    check_fits(model, split)  # other sizes cannot be evaluated at all
    check_data(ckpt, split.data, args.checkpoint, args.dataset, args.allow_other_data)
    t0 = time.perf_counter()
    result = Evaluator(split, args.split, args.protocol, args.seed, remove_history=not args.keep_history)(model)
    result = {"checkpoint": args.checkpoint, "dataset": args.dataset, "protocol": args.protocol,
              "split": args.split, "seed": args.seed, **result, "seconds": round(time.perf_counter() - t0, 3)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    run_cli(main)
