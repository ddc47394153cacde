"""Datasets: parse `user item` files into sequences, leave-one-out split, statistics.

Sequences are kept in CSR form: `items[offsets[u]:offsets[u + 1]]` is user `u`'s
history in time order, for user ids 1..n_users (a user id with no rows has an empty
slice). Nothing is copied per user, so the same code scales to large datasets.

The fixed raw formats (GroupLens `ratings.dat`, MovieLens-100K `u.data`, the JODIE csv) are read
here too (`convert_raw`), with the time ordering and k-core that `helpers.convert` (any delimited
file, with id maps) builds on. Fetching files (sources, checksums, the mirror) lives in
`helpers.fetch`; `fetch` and `FILES` stay importable from here for the notebooks.

Command line: `python -m helpers.data fetch [--dataset NAME]` and
`python -m helpers.data stats [--dataset NAME]`; converting a file of your own is
`python -m helpers.convert` (see there).
"""

from __future__ import annotations

import argparse
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.errors import DataError
from helpers.fetch import FILES, fetch
from helpers.utils import run_cli

#: Datasets of `user item` lines that train and evaluate directly.
SEQUENCE_DATASETS = ("ml-1m", "wiki1000")
#: Raw formats that need a converter first.
RAW_DATASETS = {"ml-100k": "udata"}


# --------------------------------------------------------------------------- parsing


@dataclass
class SequenceData:
    """Per-user item sequences in CSR form, indexed by user id 1..n_users."""

    name: str
    n_users: int  # largest user id
    n_items: int  # largest item id; item 0 is padding
    offsets: np.ndarray  # int64 (n_users + 2,): user u's rows are items[offsets[u]:offsets[u+1]]
    items: np.ndarray  # int64 (rows,): all items, grouped by user, in time order

    @property
    def lengths(self) -> np.ndarray:
        """Rows per user id (index 0 is unused and 0)."""
        return np.diff(self.offsets)

    @property
    def n_rows(self) -> int:
        """Number of interactions."""
        return int(self.items.size)

    def digest(self) -> str:
        """A hash of the rows (ids and order), to check that processes on several machines read the same data."""
        h = hashlib.blake2b(digest_size=16)
        for array in (self.offsets, self.items):
            h.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
        return h.hexdigest()

    def user_items(self, user: int) -> np.ndarray:
        """One user's items in time order (a view, not a copy)."""
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    def subset_users(self, users: np.ndarray, name: str | None = None) -> SequenceData:
        """The same id spaces, keeping only the rows of `users` (others become empty)."""
        keep = np.zeros(self.n_users + 1, dtype=bool)
        keep[np.asarray(users)] = True
        lengths = np.where(keep, self.lengths[: self.n_users + 1], 0)
        rows = np.repeat(keep, self.lengths[: self.n_users + 1])
        offsets = np.zeros(self.n_users + 2, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return SequenceData(name or self.name, self.n_users, self.n_items, offsets, self.items[rows])


def _line_of_row(path: Path, row: int) -> tuple[int, str]:
    """1-based line number and text of the `row`-th non-blank line (error path only)."""
    seen = -1
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                seen += 1
                if seen == row:
                    return lineno, line.rstrip("\n")
    return -1, ""


def _parse_error(path: Path, row: int, why: str) -> DataError:
    lineno, text = _line_of_row(path, row)
    return DataError(f"{path}, line {lineno}: {why}: {text!r}")


def read_pairs(path: str | Path, name: str | None = None) -> SequenceData:
    """Parse a file of `user item` lines (each user's lines contiguous, in time order)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    try:  # fast path: a well-formed file parses straight to integers in C
        fast = pd.read_csv(path, sep=" ", header=None, names=["user", "item"], dtype=np.int64, engine="c")
        if not fast.empty and isinstance(fast.index, pd.RangeIndex):  # else a line had extra fields
            return pairs_to_sequences(fast["user"].to_numpy(), fast["item"].to_numpy(), name or path.stem, path)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        pass  # slow path below finds the first bad line and names it
    try:
        frame = pd.read_csv(
            path, sep=r"\s+", header=None, names=["user", "item"], dtype=str,
            engine="c", skip_blank_lines=True, on_bad_lines="error",
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; expected lines of 'user item'") from None
    except pd.errors.ParserError as err:
        match = re.search(r"line (\d+), saw (\d+)", str(err))
        where, found = (f", line {match.group(1)}", f", found {match.group(2)}") if match else ("", "")
        raise DataError(f"{path}{where}: expected 2 fields 'user item'{found}") from None
    if frame.empty:
        raise DataError(f"{path}: the file is empty; expected lines of 'user item'")
    if not isinstance(frame.index, pd.RangeIndex):  # pandas moved extra leading fields into the index
        extra = np.flatnonzero(~frame.index.to_frame().isna().all(axis=1).to_numpy())
        raise _parse_error(path, int(extra[0]) if extra.size else 0, "expected 2 fields 'user item', found more")
    missing = frame["item"].isna().to_numpy()
    if missing.any():
        raise _parse_error(path, int(np.flatnonzero(missing)[0]), "expected 2 fields 'user item'")
    values = frame.apply(pd.to_numeric, errors="coerce")
    for col in ("user", "item"):
        as_float = values[col].to_numpy(dtype=float)
        bad = ~np.isfinite(as_float) | (as_float != np.round(as_float))
        if bad.any():
            raise _parse_error(path, int(np.flatnonzero(bad)[0]), f"{col} is not an integer")
    users = values["user"].to_numpy(dtype=np.int64)
    items = values["item"].to_numpy(dtype=np.int64)
    return pairs_to_sequences(users, items, name or path.stem, source=path)


def pairs_to_sequences(
    users: np.ndarray, items: np.ndarray, name: str, source: Path | None = None
) -> SequenceData:
    """Build CSR sequences from parallel id arrays, checking ids >= 1 and contiguous users."""
    where = str(source) if source is not None else name

    def fail(row: int, why: str) -> DataError:
        if source is not None:
            return _parse_error(source, row, why)
        return DataError(f"{where}, row {row + 1}: {why}")

    for label, ids in (("user", users), ("item", items)):
        low = np.flatnonzero(ids < 1)
        if low.size:
            return_err = fail(int(low[0]), f"{label} id {ids[low[0]]} is below 1 (ids start at 1; 0 is padding)")
            raise return_err
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    block_users = users[starts]
    _, first = np.unique(block_users, return_index=True)
    if first.size != block_users.size:
        seen_twice = np.setdiff1d(np.arange(block_users.size), first)[0]
        user = block_users[seen_twice]
        raise fail(int(starts[seen_twice]), f"user {user}'s lines are not contiguous (the user appeared earlier)")
    n_users = int(users.max())
    order = np.argsort(users, kind="stable")
    offsets = np.zeros(n_users + 2, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users + 1), out=offsets[1:])
    return SequenceData(name, n_users, int(items.max()), offsets, items[order].astype(np.int64))


# --------------------------------------------------------------------------- raw formats


def read_raw(path: Path, fmt: str) -> pd.DataFrame:
    """Read a raw interaction file into columns user, item, time (raw ids)."""
    if fmt == "ratings":  # GroupLens ratings.dat: UserID::MovieID::Rating::Timestamp
        frame = pd.read_csv(path, sep="::", engine="python", header=None,
                            names=["user", "item", "rating", "time"])
    elif fmt == "udata":  # MovieLens-100K u.data: user<TAB>item<TAB>rating<TAB>time
        frame = pd.read_csv(path, sep="\t", header=None, names=["user", "item", "rating", "time"])
    elif fmt == "jodie":  # JODIE csv: user_id,item_id,timestamp,state_label,features...
        frame = pd.read_csv(path, header=None, skiprows=1, usecols=[0, 1, 2], names=["user", "item", "time"])
    else:
        raise DataError(f"unknown raw format {fmt!r}; use 'ratings', 'udata' or 'jodie'")
    if frame.empty:
        raise DataError(f"{path}: the file is empty")
    numeric = frame[["user", "item", "time"]].apply(pd.to_numeric, errors="coerce")
    bad = numeric.isna().any(axis=1).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}, data row {row + 1}: expected numeric user, item and time")
    return numeric


def k_core(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """Repeatedly drop users and items with fewer than `k` rows until none is left (a fixed point)."""
    if k <= 1:
        return frame
    while True:
        user_n = frame.groupby("user")["item"].transform("size")
        item_n = frame.groupby("item")["user"].transform("size")
        keep = (user_n >= k) & (item_n >= k)
        if keep.all():
            return frame
        frame = frame[keep]


def convert_frame(frame: pd.DataFrame, k: int = 0) -> pd.DataFrame:
    """Order each user's rows by time (stable: ties keep file order), k-core, remap ids from 1.

    Users are numbered by their first appearance in time and items likewise, so the
    result does not depend on the raw id values. Columns: user, item, time, raw_user, raw_item.
    """
    frame = frame.reset_index(drop=True)
    frame = frame.assign(_row=np.arange(len(frame)))
    frame = k_core(frame, k)
    frame = frame.sort_values(["time", "_row"], kind="stable")
    user_ids = {u: i + 1 for i, u in enumerate(pd.unique(frame["user"]))}
    item_ids = {v: i + 1 for i, v in enumerate(pd.unique(frame["item"]))}
    out = pd.DataFrame({
        "user": frame["user"].map(user_ids).to_numpy(np.int64),
        "item": frame["item"].map(item_ids).to_numpy(np.int64),
        "time": frame["time"].to_numpy(),
        "raw_user": frame["user"].to_numpy(),
        "raw_item": frame["item"].to_numpy(),
    })
    # Group by the new user id; a stable sort keeps each user's time order.
    return out.sort_values("user", kind="stable").reset_index(drop=True)


def frame_to_sequences(frame: pd.DataFrame, name: str) -> SequenceData:
    """CSR sequences from `convert_frame`'s output (grouped by new user id, in time order)."""
    return pairs_to_sequences(frame["user"].to_numpy(), frame["item"].to_numpy(), name)


def convert_raw(path: str | Path, fmt: str, k: int = 0, name: str | None = None) -> SequenceData:
    """Convert a raw GroupLens (`ratings`), MovieLens-100K (`udata`) or JODIE (`jodie`) file."""
    path = Path(path)
    frame = convert_frame(read_raw(path, fmt), k)
    if frame.empty:
        raise DataError(f"{path}: no rows left after the {k}-core filter")
    return frame_to_sequences(frame, name or path.stem)


def load(name_or_path: str | Path, folder: str | Path | None = None) -> SequenceData:
    """Load a named dataset (`ml-1m`, `wiki1000`, `ml-100k`) or any `user item` file."""
    key = str(name_or_path)
    if key in SEQUENCE_DATASETS:
        return read_pairs(fetch(key, folder), name=key)
    if key in RAW_DATASETS:
        return convert_raw(fetch(key, folder), RAW_DATASETS[key], name=key)
    path = Path(name_or_path)
    if path.exists():
        return read_pairs(path)
    known = ", ".join(SEQUENCE_DATASETS + tuple(RAW_DATASETS))
    raise DataError(f"unknown dataset {key!r}: not one of {known}, and no file at {path}")


# --------------------------------------------------------------------------- split and stats


@dataclass
class Split:
    """Leave-one-out split as views on one `SequenceData` (nothing copied).

    Eligible users (n >= 3) train on their first n-2 items, validate on item n-1 and
    test on item n. Others keep all items for training and are not evaluated.
    """

    data: SequenceData
    train_len: np.ndarray  # int64 (n_users + 1,): training prefix length per user
    eligible: np.ndarray  # bool (n_users + 1,): user has a validation and a test item

    def history_len(self, split: str) -> np.ndarray:
        """Input history length per user: the train prefix for `valid`, one more for `test`."""
        if split == "valid":
            return self.train_len
        if split == "test":
            return self.train_len + self.eligible
        raise ValueError(f"split must be 'valid' or 'test', not {split!r}")

    def targets(self, split: str) -> np.ndarray:
        """Held-out item per user for `valid` or `test` (0 for users not evaluated)."""
        idx = self.data.offsets[:-1] + self.history_len(split)
        idx = np.minimum(idx, max(self.data.n_rows - 1, 0))
        return np.where(self.eligible, self.data.items[idx], 0)

    @property
    def eval_users(self) -> np.ndarray:
        """Ids of the users that have a validation and a test item."""
        return np.flatnonzero(self.eligible)

    @property
    def n_skipped(self) -> int:
        """Users with 1 or 2 rows: trained on, never evaluated."""
        return int(((self.data.lengths > 0) & ~self.eligible).sum())


def prefix_mask(data: SequenceData, prefix_len: np.ndarray) -> np.ndarray:
    """Boolean per row: is the row within its user's first `prefix_len[user]` rows."""
    lengths = data.lengths
    pos_in_user = np.arange(data.n_rows) - np.repeat(data.offsets[:-1], lengths)
    return pos_in_user < np.repeat(prefix_len, lengths)


def leave_one_out(data: SequenceData) -> Split:
    """Split every user with n >= 3 rows into n-2 train, 1 valid and 1 test item."""
    lengths = data.lengths[: data.n_users + 1]
    eligible = lengths >= 3
    train_len = np.where(eligible, lengths - 2, lengths).astype(np.int64)
    return Split(data, train_len, eligible)


def stats(data: SequenceData) -> dict[str, float | int | str]:
    """Users, items, rows, length percentiles, and the share of rows repeating the previous item."""
    lengths = data.lengths[: data.n_users + 1]
    lengths = lengths[lengths > 0]
    first_of_user = np.zeros(data.n_rows, dtype=bool)
    first_of_user[data.offsets[:-1][data.lengths > 0]] = True
    repeat = np.r_[False, data.items[1:] == data.items[:-1]] & ~first_of_user
    p = np.percentile(lengths, [10, 25, 50, 75, 90, 99])
    return {
        "dataset": data.name,
        "users": int(lengths.size),
        "items": int(np.unique(data.items).size),
        "rows": data.n_rows,
        "max_user_id": data.n_users,
        "max_item_id": data.n_items,
        "mean_len": float(lengths.mean()),
        "len_p10": float(p[0]), "len_p25": float(p[1]), "len_p50": float(p[2]),
        "len_p75": float(p[3]), "len_p90": float(p[4]), "len_p99": float(p[5]),
        "max_len": int(lengths.max()),
        "eval_users": int((lengths >= 3).sum()),
        "repeat_share": float(repeat.sum() / max(data.n_rows, 1)),
        "density": float(data.n_rows / (lengths.size * max(np.unique(data.items).size, 1))),
    }


def item_popularity(data: SequenceData, prefix_len: np.ndarray | None = None) -> np.ndarray:
    """Rows per item id (index 0, padding, is 0); with `prefix_len`, only each user's first
    `prefix_len[user]` rows count (`split.train_len`: the training part)."""
    items = data.items if prefix_len is None else data.items[prefix_mask(data, prefix_len)]
    return np.bincount(items, minlength=data.n_items + 1)


def movie_titles(folder: str | Path | None = None) -> dict[int, str]:
    """Map ML-1M item ids of `ml-1m.txt` to movie titles (via the id mapping and movies.dat)."""
    ids = pd.read_csv(fetch("ml-1m-item-ids", folder), sep=r"\s+", header=None, names=["item", "movie"])
    movies = pd.read_csv(fetch("ml-1m-movies", folder), sep="::", engine="python", header=None,
                         names=["movie", "title", "genres"], encoding="latin-1")
    merged = ids.merge(movies, on="movie", how="left")
    return dict(zip(merged["item"].astype(int), merged["title"].fillna("?")))


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """`fetch` or `stats` for one dataset or all of them (`python -m helpers.convert` converts a file)."""
    parser = argparse.ArgumentParser(prog="python -m helpers.data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for cmd, what in (("fetch", "download or copy and verify"), ("stats", "print statistics of")):
        p = sub.add_parser(cmd, help=f"{what} a dataset")
        p.add_argument("--dataset", default="all", help=f"one of {', '.join(FILES)} or 'all'")
        p.add_argument("--data-dir", default=None, help="local data folder (default: data/)")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        names = list(FILES) if args.dataset == "all" else [args.dataset]
        for name in names:
            print(f"{name}: {fetch(name, args.data_dir)}")
    else:
        names = list(SEQUENCE_DATASETS) + list(RAW_DATASETS) if args.dataset == "all" else [args.dataset]
        print(pd.DataFrame([stats(load(n, args.data_dir)) for n in names]).set_index("dataset").T.to_string())
    return 0


if __name__ == "__main__":
    run_cli(main)
