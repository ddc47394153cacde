"""Converters: raw interaction files -> the project's `user item` format, with id maps.

- `convert_csv`: any delimited file with a header (or with `names` for one without): ids
  of any type, kept as the strings written in the file; each user's rows ordered by time
  with ties in file order (file order alone when there is no time column); a k-core
  filter to its fixed point; ids renumbered from 1 by first appearance in time.
- `write_converted`: the `user item` file plus the id maps beside it
  (`OUT.users.csv`, `OUT.items.csv`: columns `id,original`), so recommendations can be
  shown with the original ids (`read_id_maps`).

The fixed raw formats (GroupLens `ratings.dat`, MovieLens-100K `u.data`, the JODIE csv) and the
time ordering and k-core every converter shares live in `helpers.data`, which reads named datasets.

Command line:
`python -m helpers.convert --csv FILE --user-col NAME --item-col NAME [--time-col NAME]
[--sep ,] [--names A,B,...] [--min-count K] --out FILE`.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.data import SequenceData, convert_frame, frame_to_sequences, stats
from helpers.errors import ConfigError, DataError
from helpers.utils import atomic_write, run_cli

#: Suffixes of the id-map files written beside a converted `user item` file.
USER_MAP_SUFFIX, ITEM_MAP_SUFFIX = ".users.csv", ".items.csv"


def pairs_text(data: SequenceData) -> str:
    """Sequences as `user item` lines (the format `helpers.data.read_pairs` reads)."""
    users = np.repeat(np.arange(data.n_users + 1), data.lengths[: data.n_users + 1])
    return "\n".join(f"{u} {i}" for u, i in zip(users.tolist(), data.items.tolist())) + "\n"


def write_pairs(data: SequenceData, path: str | Path) -> Path:
    """Write sequences as `user item` lines, atomically."""
    text = pairs_text(data)
    return atomic_write(path, lambda f: f.write(text.encode()))


# --------------------------------------------------------------------------- any delimited file


def read_delimited(
    path: str | Path,
    user_col: str,
    item_col: str,
    time_col: str | None = None,
    sep: str = ",",
    names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Read columns user, item, time from a delimited file; ids stay the strings of the file.

    The file has a header naming its columns, or `names` gives them (then every line is
    data). Without `time_col`, time is the row's position in the file. Errors name the
    missing column, the first row with an empty id, or the first unparsable time.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, engine="python" if len(sep) > 1 else "c",
                            header=None if names else "infer", names=list(names) if names else None)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: not a file of {sep!r}-separated columns ({str(err).strip()})") from None
    wanted = [c for c in (user_col, item_col, time_col) if c is not None]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: no column {missing[0]!r}; the columns are {list(map(str, frame.columns))} "
                        f"(separator {sep!r})")
    if frame.empty:
        raise DataError(f"{path}: the file has a header but no data rows")
    out = pd.DataFrame({"user": frame[user_col], "item": frame[item_col]})
    for col, label in ((user_col, "user"), (item_col, "item")):
        empty = (out[label].str.strip() == "").to_numpy()
        if empty.any():
            raise DataError(f"{path}, data row {int(np.flatnonzero(empty)[0]) + 1}: empty {label} id in "
                            f"column {col!r}")
    if time_col is None:
        out["time"] = np.arange(len(out), dtype=np.int64)  # file order
    else:
        out["time"] = parse_time(frame[time_col], f"{path}, column {time_col!r}")
    return out


def parse_time(values: pd.Series, where: str) -> np.ndarray:
    """Times as sortable numbers: all numeric (e.g. Unix seconds), or all ISO 8601 dates
    (`2024-05-01`, `2024-05-01 12:00:00`, `2024-05-01T12:00:00+02:00`; no zone means UTC).

    The first row says which; the two are never mixed, since comparing seconds with
    dates would order rows silently wrong. The error names the first row that differs.
    """
    text = values.str.strip()
    numeric = pd.to_numeric(text, errors="coerce")
    if pd.notna(numeric.iloc[0]):
        kind, bad, times = "a number", numeric.isna().to_numpy(), numeric.to_numpy(dtype=np.float64)
    else:
        dates = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
        kind, bad = "an ISO 8601 date", dates.isna().to_numpy()
        times = dates.dt.tz_convert(None).to_numpy().astype("datetime64[us]").astype(np.int64)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where}, data row {row + 1}: cannot read time {values.iloc[row]!r} as {kind} like the "
                        "first row's; use numbers (e.g. Unix seconds) or ISO 8601 dates (2024-05-01 12:00:00) "
                        "in every row")
    return times


@dataclass
class Converted:
    """A converted dataset and the original ids behind its numbers."""

    data: SequenceData
    users: np.ndarray  # object (n_users + 1,): original user id of each new id; index 0 is ""
    items: np.ndarray  # object (n_items + 1,): original item id of each new id; index 0 is ""


def convert_csv(
    path: str | Path,
    user_col: str,
    item_col: str,
    time_col: str | None = None,
    sep: str = ",",
    min_count: int = 1,
    names: Sequence[str] | None = None,
    name: str | None = None,
) -> Converted:
    """Read a delimited file, order by time (stable ties), k-core with `min_count`, renumber from 1."""
    if min_count < 1:
        raise ConfigError(f"min_count must be at least 1, got {min_count}")
    path = Path(path)
    frame = convert_frame(read_delimited(path, user_col, item_col, time_col, sep, names), min_count)
    if frame.empty:
        raise DataError(f"{path}: no rows left after keeping users and items with at least {min_count} rows "
                        "(lower --min-count)")
    return Converted(frame_to_sequences(frame, name or path.stem), _id_table(frame, "user"), _id_table(frame, "item"))


def _id_table(frame: pd.DataFrame, col: str) -> np.ndarray:
    """Original id per new id (index 0, padding, is the empty string)."""
    pairs = frame.drop_duplicates(col)
    table = np.full(int(frame[col].max()) + 1, "", dtype=object)
    table[pairs[col].to_numpy()] = pairs[f"raw_{col}"].astype(str).to_numpy()
    return table


# --------------------------------------------------------------------------- id maps


def id_map_paths(path: str | Path) -> tuple[Path, Path]:
    """Where the user and item maps of the `user item` file `path` live."""
    path = Path(path)
    return path.with_name(path.stem + USER_MAP_SUFFIX), path.with_name(path.stem + ITEM_MAP_SUFFIX)


def _map_csv(table: np.ndarray) -> bytes:
    buffer = io.StringIO()
    pd.DataFrame({"id": np.arange(1, table.size), "original": table[1:]}).to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def write_converted(converted: Converted, out: str | Path) -> Path:
    """Write the maps, then the `user item` file (each atomically): a `user item` file never
    appears without the maps of its own conversion beside it."""
    out = Path(out)
    user_path, item_path = id_map_paths(out)
    body = pairs_text(converted.data).encode()
    maps = {user_path: _map_csv(converted.users), item_path: _map_csv(converted.items)}
    for map_path, text in maps.items():
        atomic_write(map_path, lambda f, text=text: f.write(text))
    return atomic_write(out, lambda f: f.write(body))


@dataclass
class IdMaps:
    """Original ids <-> project ids of one converted dataset."""

    users: np.ndarray  # object (n_users + 1,): original id of each project user id ("" at 0)
    items: np.ndarray  # object (n_items + 1,): original id of each project item id ("" at 0)

    def __post_init__(self) -> None:
        self.user_ids = {str(orig): i for i, orig in enumerate(self.users) if i}
        self.item_ids = {str(orig): i for i, orig in enumerate(self.items) if i}

    def item_id(self, original: str) -> int:
        """Project id of an original item id (one-line error for an unknown one)."""
        if original not in self.item_ids:
            raise DataError(f"unknown item {original!r}: not among the dataset's {len(self.item_ids)} items")
        return self.item_ids[original]

    def user_id(self, original: str) -> int:
        """Project id of an original user id (one-line error for an unknown one)."""
        if original not in self.user_ids:
            raise DataError(f"unknown user {original!r}: not among the dataset's {len(self.user_ids)} users")
        return self.user_ids[original]


def _read_map(path: Path) -> np.ndarray:
    frame = pd.read_csv(path, dtype={"id": np.int64, "original": str}, keep_default_na=False)
    if list(frame.columns) != ["id", "original"] or not np.array_equal(frame["id"], np.arange(1, len(frame) + 1)):
        raise DataError(f"{path}: not an id map (expected columns id,original with ids 1..n in order)")
    return np.array(["", *frame["original"].tolist()], dtype=object)


def read_id_maps(path: str | Path) -> IdMaps | None:
    """The id maps written beside a converted file, or None when there are none."""
    user_path, item_path = id_map_paths(path)
    if not (user_path.exists() and item_path.exists()):
        return None
    return IdMaps(_read_map(user_path), _read_map(item_path))


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The converter's options."""
    parser.add_argument("--csv", required=True, help="delimited input file with a header row")
    parser.add_argument("--user-col", required=True, help="column of user ids (any type)")
    parser.add_argument("--item-col", required=True, help="column of item ids (any type)")
    parser.add_argument("--time-col", default=None, help="column of times (numbers or dates); default: file order")
    parser.add_argument("--sep", default=",", help=r"field separator (default ','; '\t' for tabs)")
    parser.add_argument("--names", default=None,
                        help="comma-separated column names for a file without a header row")
    parser.add_argument("--min-count", type=int, default=1,
                        help="k-core: keep users and items with at least K rows, repeated until stable (default 1)")
    parser.add_argument("--out", required=True, help="output 'user item' file; the id maps go beside it")


def run(args: argparse.Namespace) -> int:
    """Convert as the parsed options say; print a one-line JSON summary."""
    sep = "\t" if args.sep in ("\\t", "tab") else args.sep  # a shell passes a tab as the two characters \t
    names = [n.strip() for n in args.names.split(",")] if args.names else None
    converted = convert_csv(args.csv, args.user_col, args.item_col, args.time_col, sep, args.min_count, names)
    out = write_converted(converted, args.out)
    user_map, item_map = id_map_paths(out)
    summary = {k: v for k, v in stats(converted.data).items() if k in ("users", "items", "rows", "len_p50")}
    print(json.dumps({"out": str(out), "user_map": str(user_map), "item_map": str(item_map), **summary}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Convert a delimited file to `user item` lines plus id maps."""
    parser = argparse.ArgumentParser(prog="python -m helpers.convert", description=main.__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
