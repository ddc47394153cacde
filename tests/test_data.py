"""Parsing, the split and statistics (fetching: tests/test_fetch.py; converters: tests/test_convert.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import data, fetch
from helpers.errors import DataError


def test_parse_tiny(tiny_file: Path) -> None:
    d = data.read_pairs(tiny_file)
    assert (d.n_users, d.n_items, d.n_rows) == (3, 6, 11)
    assert d.user_items(1).tolist() == [1, 2, 3, 4, 5]
    assert d.user_items(2).tolist() == [2, 6]
    assert d.user_items(3).tolist() == [6, 5, 4, 3]


def test_split_tiny(tiny_file: Path) -> None:
    split = data.leave_one_out(data.read_pairs(tiny_file))
    assert split.eval_users.tolist() == [1, 3]
    assert split.train_len[1:].tolist() == [3, 2, 2]  # user 2 (n = 2) keeps all
    assert split.targets("valid")[1:].tolist() == [4, 0, 4]
    assert split.targets("test")[1:].tolist() == [5, 0, 3]
    assert split.history_len("test")[1:].tolist() == [4, 2, 3]
    assert split.n_skipped == 1


def test_stats_tiny(tmp_path: Path) -> None:
    path = tmp_path / "rep.txt"
    path.write_text("1 1\n1 1\n1 2\n2 2\n2 2\n2 2\n")
    s = data.stats(data.read_pairs(path))
    assert s["users"] == 2 and s["items"] == 2 and s["rows"] == 6
    assert s["repeat_share"] == pytest.approx(3 / 6)  # user 1: one repeat; user 2: two
    assert s["len_p50"] == 3


def test_real_ml1m(ml1m: data.SequenceData) -> None:
    s = data.stats(ml1m)
    assert (s["users"], s["items"], s["rows"]) == (6040, 3416, 999_611)
    assert s["len_p50"] == 96 and s["max_len"] == 2277
    split = data.leave_one_out(ml1m)
    assert split.eval_users.size == 6040
    # Every user's train + valid + test is exactly their sequence.
    assert int(split.train_len.sum()) + 2 * 6040 == 999_611


def test_real_wiki(wiki: data.SequenceData) -> None:
    s = data.stats(wiki)
    assert (s["users"], s["items"], s["rows"]) == (8227, 1000, 157_474)
    assert data.leave_one_out(wiki).eval_users.size == 3958
    assert 0.78 < s["repeat_share"] < 0.80


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("1 2\n1 x\n", "line 2: item is not an integer"),
        ("1 2\n1\n", "line 2: expected 2 fields"),
        ("1 2\n1 3 4\n", "line 2: expected 2 fields 'user item', found 3"),
        ("1 2\n2 0\n", "line 2: item id 0 is below 1"),
        ("0 2\n", "line 1: user id 0 is below 1"),
        ("1 2\n2 3\n1 4\n", "line 3: user 1's lines are not contiguous"),
        ("", "the file is empty"),
        ("\n\n", "the file is empty"),
    ],
)
def test_bad_input_one_line_error(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        data.read_pairs(path)
    message = str(info.value)
    assert needle in message and str(path) in message and "\n" not in message


def test_unknown_dataset() -> None:
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        data.load("nope")


def test_load_ml100k_goes_through_the_converter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`load("ml-100k")` converts the raw u.data (the converters live in helpers.convert)."""
    monkeypatch.setenv(fetch.DATA_DIR_ENV, str(tmp_path))
    d = data.load("ml-100k")
    assert (d.name, d.n_users, d.n_items, d.n_rows) == ("ml-100k", 943, 1682, 100_000)


