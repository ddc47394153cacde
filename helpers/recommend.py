"""Recommendations from a trained model for any history: `recommend(...)` and its command line.

`recommend(model, history, user=None, k=10)` scores every item after `history` (oldest
first; only the last `maxlen` items enter the model) in evaluation mode and returns
the k best, never padding and never an item of the history unless `allow_repeats`.
Ties are broken by the smaller item id, so the answer is the same every time. The
catalogue is scored in blocks of items with a running top k (`top_k`), so its size costs
time, not memory.

A history without a known user: SSE-PT needs a user vector, and `UnknownUser` supplies
one (`UNKNOWN_USER_MODES`):
- `mean`: the mean of the trained user table;
- `random`: scores averaged over `RANDOM_DRAWS` uniformly random other users, which is
  how user SSE fed most training sequences (with probability `p_user` = 0.92 a
  sequence carried a random user's id), so the model has learnt to work under it;
- `zero`: a zero user vector (the user part then adds nothing).
`python -m helpers.studies.unknown_user` measures each on ML-1M (`artifacts/unknown_user.json`,
docs/own_data.md), which chose the default, `mean` (`DEFAULT_UNKNOWN_USER`). SASRec has no user
part: every mode is the same.

Command line:
`python -m helpers.recommend --checkpoint PATH --dataset NAME (--user ID | --items ID [ID ...])
[--k 10] [--titles] [--json] [--allow-repeats] [--unknown-user MODE] [--allow-other-data]`; with a
converted dataset (id maps beside it, see `helpers.convert`) ids are the original ones. Other data than
the checkpoint was trained on (by content) is refused unless `--allow-other-data`.
`--all-users --out FILE_OR_DIR [--users FILE] [--keep-seen] [--format csv|parquet]` writes every user's
top k to disk instead (`helpers.batch`; under torchrun, one part file per process; docs/serving.md).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from helpers.batch import FORMATS, PART_USERS, file_digest, read_users, write_recommendations
from helpers.checkpoint import OTHER_DATA_FLAG, check_data
from helpers.convert import IdMaps, read_id_maps
from helpers.data import RAW_DATASETS, SEQUENCE_DATASETS, SequenceData, load, movie_titles
from helpers.distributed import process_group
from helpers.errors import CheckpointError, ConfigError, DataError, NonFiniteError
from helpers.evaluate import SCORE_BLOCK, Scorer, catalogue_scorer, item_blocks, n_items_of
from helpers.model import SSEPT, load_checkpoint
from helpers.utils import UNKNOWN_USER_STREAM, get_device, run_cli

UNKNOWN_USER_MODES = ("mean", "random", "zero")
#: Chosen by the unknown-user study (`UNKNOWN_USER_STUDY`; docs/own_data.md): `mean` scores as well as
#: `random` and costs one forward pass instead of `RANDOM_DRAWS`.
DEFAULT_UNKNOWN_USER = "mean"
#: The command that measures the unknown-user modes on ML-1M.
UNKNOWN_USER_STUDY = "python -m helpers.studies.unknown_user"
#: Users whose scores `random` averages.
RANDOM_DRAWS = 8
#: Row 0 of the user table is never trained (user ids start at 1, and user SSE draws
#: from 1..n_users), so it can carry a supplied vector while a batch is scored.
UNKNOWN_USER_ID = 0


class Recommendations(NamedTuple):
    """The k best items, best first, and their scores."""

    items: np.ndarray  # int64 (k,): item ids of the model's dataset
    scores: np.ndarray  # float32 (k,)


# --------------------------------------------------------------------------- unknown users


@contextmanager
def _user_row(model: SSEPT, vector: torch.Tensor) -> Iterator[None]:
    """Put `vector` into the unused row `UNKNOWN_USER_ID` of the user table; restore it afterwards."""
    weight = model.user_emb.weight
    saved = weight[UNKNOWN_USER_ID].detach().clone()
    with torch.no_grad():
        weight[UNKNOWN_USER_ID] = vector.to(weight.device, weight.dtype)
    try:
        yield
    finally:
        with torch.no_grad():
            weight[UNKNOWN_USER_ID] = saved


class UnknownUser(nn.Module):
    """A model that scores every sequence as an unknown user's: the user ids it is given are ignored.

    Wraps an `SSEPT` (or a SASRec, for which nothing changes) and has the `predict`
    interface of the evaluation code, so `Evaluator` can measure it.
    """

    def __init__(self, model: SSEPT, mode: str = DEFAULT_UNKNOWN_USER, draws: int = RANDOM_DRAWS,
                 seed: int = 0) -> None:
        super().__init__()
        if mode not in UNKNOWN_USER_MODES:
            raise ConfigError(f"unknown-user mode must be one of {UNKNOWN_USER_MODES}, got {mode!r}")
        if draws < 1:
            raise ConfigError(f"draws must be at least 1, got {draws}")
        self.model, self.mode = model, mode
        self.config = model.config
        n_users = model.config.n_users
        # Fixed draws: every call averages over the same users, so answers repeat exactly.
        rng = np.random.default_rng([seed, UNKNOWN_USER_STREAM])
        self.draw_ids = torch.from_numpy(rng.integers(1, n_users + 1, size=draws))

    @property
    def maxlen(self) -> int:
        """Longest input window (the model's)."""
        return self.model.maxlen

    def user_vector(self) -> torch.Tensor | None:
        """The user-table vector that `mean` and `zero` use (None for `random` and for SASRec)."""
        table = self.model.user_emb
        if table is None or self.mode == "random":
            return None
        if self.mode == "mean":
            return table.weight[1:].detach().mean(0)
        return torch.zeros_like(table.weight[0])

    @torch.no_grad()
    def predict(self, users: torch.Tensor, seqs: torch.Tensor, candidates: torch.Tensor | None) -> torch.Tensor:
        """Scores as the wrapped model's `predict`, with the unknown-user vector for every row."""
        anon = torch.full_like(users, UNKNOWN_USER_ID)
        if self.model.user_emb is None:
            return self.model.predict(anon, seqs, candidates)
        if self.mode != "random":
            with _user_row(self.model, self.user_vector()):
                return self.model.predict(anon, seqs, candidates)
        return _mean(self.model.predict(fed, seqs, candidates) for fed in self._random_users(users))

    @torch.no_grad()
    def block_scorer(self, users: torch.Tensor, seqs: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """`predict`'s scores for any block of item ids (see `SSEPT.block_scorer`), the states computed once."""
        anon = torch.full_like(users, UNKNOWN_USER_ID)
        if self.model.user_emb is None:
            return self.model.block_scorer(anon, seqs)
        if self.mode != "random":
            with _user_row(self.model, self.user_vector()):
                return self.model.block_scorer(anon, seqs)  # reads the supplied vector now, once
        scorers = [self.model.block_scorer(fed, seqs) for fed in self._random_users(users)]
        return lambda items: _mean(one(items) for one in scorers)

    def _random_users(self, users: torch.Tensor) -> list[torch.Tensor]:
        """The user ids `random` feeds, one tensor per draw; never a row's own id."""
        n_users = self.model.config.n_users
        fed = [torch.full_like(users, int(other)) for other in self.draw_ids.to(users.device)]
        return [torch.where(ids == users, ids % n_users + 1, ids) for ids in fed]


def _mean(parts: Iterable[torch.Tensor]) -> torch.Tensor:
    """The mean of float32 score tensors, added up in order."""
    total, count = None, 0
    for part in parts:
        scores = part.float()
        total, count = (scores if total is None else total + scores), count + 1
    return total / count


# --------------------------------------------------------------------------- recommend


def _catalogue(model: Scorer) -> tuple[int, int | None]:
    """Largest item id, and largest user id when the model has a user part (else None)."""
    config = getattr(model, "config", None)
    return n_items_of(model), (config.n_users if config is not None and config.user_dim else None)


def check_history(history: Sequence[int] | np.ndarray, n_items: int) -> np.ndarray:
    """The history as int64 ids, refusing an empty one or an id outside 1..n_items."""
    items = np.asarray(history)
    if items.ndim != 1 or items.size == 0:
        raise ConfigError("the history must be a non-empty list of item ids, oldest first")
    if not np.issubdtype(items.dtype, np.integer):
        raise ConfigError(f"item ids must be integers, got {items.dtype} values")
    bad = items[(items < 1) | (items > n_items)]
    if bad.size:
        raise DataError(f"item {int(bad[0])} is not in the model's catalogue (ids 1..{n_items})")
    return items.astype(np.int64)


@contextmanager
def eval_mode(model: Scorer) -> Iterator[None]:
    """Evaluation mode (no dropout) for the duration, then the mode the model had."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


def _device(model: Scorer) -> torch.device:
    params = getattr(model, "parameters", None)
    return next(params()).device if params is not None else torch.device("cpu")


def recommend(
    model: Scorer,
    history: Sequence[int] | np.ndarray,
    user: int | None = None,
    k: int = 10,
    allow_repeats: bool = False,
    unknown_user: str = DEFAULT_UNKNOWN_USER,
    block_size: int = SCORE_BLOCK,
) -> Recommendations:
    """The `k` best items after `history` (item ids, oldest first) for `user`, best first.

    `user=None` is an unknown user, scored as `UnknownUser(model, unknown_user)`. Items of
    the history are left out unless `allow_repeats`; fewer than `k` come back when fewer
    remain. Runs in evaluation mode (the model's mode is restored) and is deterministic.
    `block_size` items are scored at a time (the answer does not depend on it).
    """
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    n_items, n_users = _catalogue(model)
    items = check_history(history, n_items)
    if user is not None and n_users is not None and not 1 <= user <= n_users:
        raise DataError(f"user {user} is not one of the model's users (ids 1..{n_users})")
    scorer: Scorer = model
    if user is None and isinstance(model, SSEPT):
        scorer = UnknownUser(model, unknown_user)
    device = _device(model)
    window = torch.from_numpy(items[-model.maxlen:][None, :]).to(device)
    users = torch.tensor([user or UNKNOWN_USER_ID], device=device)
    allowed = np.ones(n_items + 1, dtype=bool)
    allowed[0] = False  # padding
    if not allow_repeats:
        allowed[items] = False
    with eval_mode(model), torch.no_grad():
        score, n_cols = catalogue_scorer(scorer, users, window)
        return top_k(lambda ids: score(ids)[0], allowed, k, item_blocks(n_cols, block_size), device)


def top_k(score: Callable[[torch.Tensor], torch.Tensor], allowed: np.ndarray, k: int,
          blocks: Sequence[tuple[int, int]], device: torch.device | str = "cpu") -> Recommendations:
    """The `k` best `allowed` item ids by the scores `score(ids)` (C,) gives for blocks of ids, best first,
    equal scores by the smaller id, with a running top k: the same answer as sorting every allowed score.

    A NaN or infinite score among the allowed items is an error (a NaN would sort as if it were a score).
    """
    best_items, best_scores = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    bad = total = 0
    for start, end in blocks:
        keep = allowed[start:end]
        ids = np.arange(start, end)[keep]
        scores = score(torch.arange(start, end, device=device)).float().cpu().numpy()[keep]
        bad, total = bad + int((~np.isfinite(scores)).sum()), total + ids.size
        if scores.size > k:  # only what can still enter the top k: the k-th best and everything tied with it
            top = scores >= np.partition(scores, scores.size - k)[scores.size - k]
            ids, scores = ids[top], scores[top]
        ids, scores = np.concatenate([best_items, ids]), np.concatenate([best_scores, scores])
        order = np.lexsort((ids, -scores))[:k]  # by score, best first, then by the smaller id
        best_items, best_scores = ids[order], scores[order]
    if bad:
        raise NonFiniteError(f"{bad} of {total} item scores are NaN or infinite: the model has diverged")
    return Recommendations(best_items, best_scores.astype(np.float32))


# --------------------------------------------------------------------------- command line


def _dataset_maps(dataset: str) -> IdMaps | None:
    """Id maps beside a converted dataset file, if it is one."""
    if dataset in SEQUENCE_DATASETS or dataset in RAW_DATASETS:
        return None
    return read_id_maps(dataset)


def _to_id(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{what} {text!r} is not an integer id (this dataset has no id maps beside it)") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers.recommend", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint file (.pt)")
    parser.add_argument("--dataset", required=True,
                        help="the dataset the checkpoint was trained on: ml-1m, wiki1000, ml-100k or a file")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="a user of the dataset: their whole history is the input")
    who.add_argument("--items", nargs="+", help="any history of item ids, oldest first (an unknown user)")
    who.add_argument("--all-users", action="store_true",
                     help="every user's top k (or --users'), written to --out (docs/serving.md)")
    parser.add_argument("--k", type=int, default=10, help="how many items (default 10)")
    parser.add_argument("--titles", action="store_true", help="ML-1M: show movie titles")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--allow-repeats", "--keep-seen", dest="allow_repeats", action="store_true",
                        help="allow items of the history (e.g. Wiki1000)")
    batch = parser.add_argument_group("--all-users")
    batch.add_argument("--out", help="a .csv or .parquet file, or a folder of part files and a manifest")
    batch.add_argument("--users", dest="users_file", metavar="FILE",
                       help="only the users named in FILE, one id a line (the dataset's own ids)")
    batch.add_argument("--format", choices=FORMATS, default=None,
                       help="format of a folder's parts (default csv; a file's suffix names its own)")
    batch.add_argument("--part-users", type=int, default=PART_USERS,
                       help=f"users per part file (default {PART_USERS})")
    batch.add_argument("--batch-users", type=int, default=None,
                       help="users scored at once (default 32 on a CPU, 256 elsewhere)")
    parser.add_argument("--unknown-user", choices=UNKNOWN_USER_MODES, default=DEFAULT_UNKNOWN_USER,
                        help=f"user vector for --items (default {DEFAULT_UNKNOWN_USER}; docs/own_data.md)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")
    parser.add_argument(OTHER_DATA_FLAG, action="store_true",
                        help="use the checkpoint on other data than it was trained on (of the same sizes)")
    return parser


def _input(args: argparse.Namespace, data: SequenceData, maps: IdMaps | None) -> tuple[int | None, np.ndarray]:
    """The user id (None for `--items`, an unknown user) and the history to recommend after."""
    if args.user is None:
        return None, np.array([maps.item_id(i) if maps else _to_id(i, "item") for i in args.items], dtype=np.int64)
    user = maps.user_id(args.user) if maps else _to_id(args.user, "user")
    if not 1 <= user <= data.n_users or data.lengths[user] == 0:
        raise DataError(f"user {args.user} has no rows in {args.dataset!r}")
    return user, data.user_items(user)


def _print(args: argparse.Namespace, rows: list[dict[str, Any]], user: int | None, unknown: str | None,
           history: np.ndarray, maxlen: int) -> None:
    """One JSON object (`--json`), or a heading and one line per recommended item."""
    if args.json:
        print(json.dumps({"checkpoint": args.checkpoint, "dataset": args.dataset, "user": args.user,
                          "history_length": int(history.size), "unknown_user": unknown,
                          "recommendations": rows}))
        return
    who_text = f"user {args.user}" if user is not None else f"an unknown user ({unknown or 'no user part'})"
    print(f"top {len(rows)} for {who_text} after {history.size} items (the last {min(history.size, maxlen)}"
          f" used), {Path(args.checkpoint).name}:")
    for row in rows:
        print(f"{row['rank']:>3}  {row['score']:>9.4f}  {row['item']}" + (f"  {row['title']}" if args.titles else ""))


def _check_batch_flags(args: argparse.Namespace) -> None:
    """The batch job's options go with --all-users, and --all-users with --out."""
    if args.all_users:
        if not args.out:
            raise ConfigError("--all-users needs --out FILE_OR_DIR (a .csv or .parquet file, or a folder)")
        if args.titles:
            raise ConfigError("--titles shows one user's recommendations; --all-users writes ids")
        return
    given = [flag for flag, value in (("--out", args.out), ("--users", args.users_file),
                                      ("--format", args.format)) if value]
    if given:
        raise ConfigError(f"{given[0]} goes with --all-users")


def _batch(args: argparse.Namespace, model: SSEPT, data: SequenceData, maps: IdMaps | None) -> int:
    """The batch job: every user's (or --users') top k on disk; rank 0 prints a one-line JSON summary."""
    users = read_users(args.users_file, data, maps) if args.users_file else None
    device = _device(model)
    with process_group("auto", device) as world:
        summary = write_recommendations(model, data, args.out, args.k, file_digest(args.checkpoint),
                                        args.allow_repeats, users, maps, args.format, args.part_users,
                                        args.batch_users, world=world, device=world.device(device))
        if world.main:
            print(json.dumps({"checkpoint": args.checkpoint, "dataset": args.dataset, "k": args.k, **summary}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Print the top k items for a known user or for any history."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["measure-unknown-user"]:
        raise ConfigError(f"'python -m helpers.recommend measure-unknown-user' is now '{UNKNOWN_USER_STUDY}' "
                          "(the same options)")
    args = _parser().parse_args(argv)
    _check_batch_flags(args)
    if args.titles and args.dataset != "ml-1m":
        raise ConfigError("--titles needs --dataset ml-1m (titles are known for ML-1M only)")

    model, ckpt = load_checkpoint(args.checkpoint, get_device(args.device))
    data = load(args.dataset)
    config = model.config
    if (config.n_users, config.n_items) != (data.n_users, data.n_items):
        raise CheckpointError(f"{args.checkpoint} was trained for {config.n_users} users and {config.n_items} "
                              f"items, but {args.dataset!r} has {data.n_users} and {data.n_items}")
    check_data(ckpt, data, args.checkpoint, args.dataset, args.allow_other_data)
    maps = _dataset_maps(args.dataset)
    if args.all_users:
        return _batch(args, model, data, maps)
    user, history = _input(args, data, maps)
    recs = recommend(model, history, user, args.k, args.allow_repeats, args.unknown_user)

    titles = movie_titles() if args.titles else {}
    rows = [{"rank": r + 1, "item": str(maps.items[i]) if maps else int(i), "score": round(float(s), 4),
             **({"title": titles.get(int(i), "?")} if args.titles else {})}
            for r, (i, s) in enumerate(zip(recs.items, recs.scores))]
    _print(args, rows, user, args.unknown_user if user is None and config.user_dim else None, history, model.maxlen)
    return 0


if __name__ == "__main__":
    run_cli(main)
