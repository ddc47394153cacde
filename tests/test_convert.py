"""Converters: any delimited file (string ids, stable time order, k-core, id maps, errors) and the fixed formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import convert, data
from helpers.errors import ConfigError, DataError
from helpers.utils import run_cli


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def sequences(conv: convert.Converted) -> dict[str, list[str]]:
    """Each original user's items, in the converted order, as original ids."""
    d = conv.data
    return {conv.users[u]: [conv.items[i] for i in d.user_items(u)] for u in range(1, d.n_users + 1)}


# --------------------------------------------------------------------------- delimited files


def test_string_ids_are_kept_exactly(tmp_path: Path) -> None:
    """'007' and '7' are different ids; 'NA' and a quoted comma stay as written."""
    path = write(tmp_path / "a.csv", 'user,item\n007,"x,y"\n7,NA\n007,NA\n7,"x,y"\n')
    conv = convert.convert_csv(path, "user", "item")
    assert sequences(conv) == {"007": ["x,y", "NA"], "7": ["NA", "x,y"]}
    assert conv.users.tolist() == ["", "007", "7"] and conv.items.tolist() == ["", "x,y", "NA"]


def test_time_order_with_ties_in_file_order(tmp_path: Path) -> None:
    """Rows sorted by time; equal times keep file order; users and items numbered by first time."""
    path = write(tmp_path / "t.csv", "u;i;t\nb;p;5\nb;q;1\nb;r;1\na;q;0\nb;s;1\n")
    conv = convert.convert_csv(path, "u", "i", "t", sep=";")
    assert sequences(conv) == {"a": ["q"], "b": ["q", "r", "s", "p"]}
    assert conv.data.user_items(1).tolist() == [1] and conv.data.user_items(2).tolist() == [1, 2, 3, 4]


def test_no_time_column_means_file_order(tmp_path: Path) -> None:
    path = write(tmp_path / "f.csv", "item,user\nz,u1\ny,u2\nx,u1\nz,u2\n")
    conv = convert.convert_csv(path, "user", "item")
    assert sequences(conv) == {"u1": ["z", "x"], "u2": ["y", "z"]}


def test_iso_dates_with_zones_are_ordered_in_utc(tmp_path: Path) -> None:
    """10:00+02:00 is 08:00 UTC, so it comes before 09:00 (no zone = UTC)."""
    path = write(tmp_path / "d.csv", "u,i,when\na,late,2024-01-01 09:00\na,early,2024-01-01T10:00:00+02:00\n"
                                      "a,first,2023-12-31\n")
    assert sequences(convert.convert_csv(path, "u", "i", "when")) == {"a": ["first", "early", "late"]}


def test_k_core_reaches_a_fixed_point(tmp_path: Path) -> None:
    """k = 2: item z has one row; dropping it leaves user c with one row; dropping c leaves y with 2.

    One pass of the filter would keep c's row (c, y); the fixed point does not.
    """
    rows = [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("c", "y"), ("c", "z")]
    path = write(tmp_path / "k.csv", "user,item\n" + "".join(f"{u},{i}\n" for u, i in rows))
    conv = convert.convert_csv(path, "user", "item", min_count=2)
    assert sequences(conv) == {"a": ["x", "y"], "b": ["x", "y"]}
    assert conv.data.lengths[1:].min() >= 2 and np.bincount(conv.data.items)[1:].min() >= 2


def test_maps_round_trip_through_files(tmp_path: Path) -> None:
    """The written `user item` file plus its maps give back every original (user, item) row in time order."""
    rows = [("u x", "i,1", 3), ("v", "i 2", 1), ("u x", "NA", 2), ("v", "i,1", 4), ("u x", "i 2", 5)]
    path = write(tmp_path / "r.tsv", "who\twhat\twhen\n" + "".join(f"{u}\t{i}\t{t}\n" for u, i, t in rows))
    out = convert.write_converted(convert.convert_csv(path, "who", "what", "when", sep="\t"), tmp_path / "o.txt")
    maps = convert.read_id_maps(out)
    assert maps is not None
    back = data.read_pairs(out)
    got = {maps.users[u]: [maps.items[i] for i in back.user_items(u)] for u in range(1, back.n_users + 1)}
    expected = {u: [i for _, i, _ in sorted((r for r in rows if r[0] == u), key=lambda r: r[2])] for u in ("u x", "v")}
    assert got == expected
    assert maps.item_id("NA") == 2 and maps.user_id("v") == 1
    with pytest.raises(DataError, match="unknown item 'nope'"):
        maps.item_id("nope")


def test_no_maps_beside_a_plain_file(tiny_file: Path) -> None:
    assert convert.read_id_maps(tiny_file) is None


def test_names_for_a_file_without_header(tmp_path: Path) -> None:
    path = write(tmp_path / "u.data", "1\t10\t5\t20\n1\t11\t3\t10\n2\t10\t4\t5\n")
    conv = convert.convert_csv(path, "user", "item", "time", sep="\t", names=["user", "item", "rating", "time"])
    assert sequences(conv) == {"2": ["10"], "1": ["11", "10"]}


@pytest.mark.parametrize(
    ("text", "kwargs", "needle"),
    [
        ("user,item\na,b\n", {"item_col": "movie"}, "no column 'movie'; the columns are ['user', 'item']"),
        ("user,item\na,b\n", {"time_col": "ts"}, "no column 'ts'"),
        ("user,item,ts\na,b,1\na,c,yesterday\n", {"time_col": "ts"}, "column 'ts', data row 2: cannot read time"),
        ("user,item,ts\na,b,1\na,c,2024-01-01\n", {"time_col": "ts"}, "row 2: cannot read time '2024-01-01' as a"),
        ("user,item,ts\na,b,2024-01-01\na,c,17\n", {"time_col": "ts"}, "row 2: cannot read time '17' as an ISO"),
        ("user,item\na,b\na,c\n", {"min_count": 2}, "no rows left after keeping users and items with at least 2"),
        ("user,item\n", {}, "has a header but no data rows"),
        ("", {}, "the file is empty"),
        ("user,item\na,b\n,c\n", {}, "data row 2: empty user id in column 'user'"),
    ],
)
def test_bad_input_one_line_error_and_nothing_written(tmp_path: Path, text: str, kwargs: dict, needle: str) -> None:
    path = write(tmp_path / "bad.csv", text)
    args = {"user_col": "user", "item_col": "item", **kwargs}
    with pytest.raises(DataError) as info:
        convert.write_converted(convert.convert_csv(path, **args), tmp_path / "out" / "o.txt")
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_min_count_below_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="min_count"):
        convert.convert_csv(write(tmp_path / "a.csv", "u,i\na,b\n"), "u", "i", min_count=0)


def test_a_failed_write_leaves_the_old_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The maps are written first and the `user item` file last, each atomically."""
    conv = convert.convert_csv(write(tmp_path / "a.csv", "u,i\na,b\n"), "u", "i")
    out = convert.write_converted(conv, tmp_path / "o.txt")
    before = out.read_text()

    def broken(data: data.SequenceData) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(convert, "pairs_text", broken)
    with pytest.raises(OSError):
        convert.write_converted(conv, out)
    assert out.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "o.items.csv", "o.txt", "o.users.csv"]


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "a.tsv", "user\titem\tts\nann\tm1\t2\nann\tm2\t1\nann\tm3\t3\nbo\tm1\t1\n")
    out = tmp_path / "o.txt"
    assert convert.main(["--csv", str(path), "--user-col", "user", "--item-col", "item",
                         "--time-col", "ts", "--sep", "\\t", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["users"], summary["items"], summary["rows"]) == (2, 3, 4)
    assert out.read_text() == "1 1\n1 2\n1 3\n2 2\n"  # ann: m2 (t=1), m1, m3; bo: m1
    assert convert.read_id_maps(out).users.tolist() == ["", "ann", "bo"]


def test_command_line_error_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "a.csv", "user,item\na,b\n")
    with pytest.raises(SystemExit) as info:
        run_cli(convert.main, ["--csv", str(path), "--user-col", "uid", "--item-col", "item",
                           "--out", str(tmp_path / "o.txt")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no column 'uid'" in err and err.count("\n") == 1
    assert not (tmp_path / "o.txt").exists()


# --------------------------------------------------------------------------- the fixed raw formats


def test_udata_converter_on_ml100k(tmp_path: Path) -> None:
    raw = data.fetch("ml-100k", tmp_path)
    d = data.convert_raw(raw, "udata")
    assert (data.stats(d)["users"], data.stats(d)["items"], d.n_rows) == (943, 1682, 100_000)
    assert (d.n_users, d.n_items) == (943, 1682)  # remapped to 1..n
    cored = data.convert_raw(raw, "udata", k=20)
    s = data.stats(cored)
    assert s["rows"] < 100_000 and s["users"] < 943 and s["items"] < 1682
    assert cored.lengths[1:].min() >= 20
    assert np.bincount(cored.items)[1:].min() >= 20


def test_generic_converter_matches_udata_on_ml100k(tmp_path: Path) -> None:
    """Read through `convert_csv` (strings), u.data gives the same sequences as the fixed-format reader."""
    raw = data.fetch("ml-100k", tmp_path)
    fixed = data.convert_raw(raw, "udata", k=5)
    generic = convert.convert_csv(raw, "user", "item", "time", sep="\t", min_count=5,
                                  names=["user", "item", "rating", "time"]).data
    assert np.array_equal(fixed.offsets, generic.offsets) and np.array_equal(fixed.items, generic.items)


def test_converter_orders_by_time_with_stable_ties(tmp_path: Path) -> None:
    raw = tmp_path / "u.data"
    # user 7: items 30 (t=5), 10 (t=1), 20 (t=1): tie keeps file order 10 then 20.
    raw.write_text("7\t30\t5\t5\n7\t10\t3\t1\n7\t20\t4\t1\n9\t10\t1\t0\n")
    d = data.convert_raw(raw, "udata")
    # user 9 acts first (t=0) -> id 1; item 10 first seen -> id 1, then 20 -> 2, 30 -> 3.
    assert d.user_items(1).tolist() == [1]
    assert d.user_items(2).tolist() == [1, 2, 3]


def test_ratings_and_jodie_converters(tmp_path: Path) -> None:
    ratings = tmp_path / "ratings.dat"
    ratings.write_text("5::100::4::20\n5::200::3::10\n6::100::5::30\n")
    d = data.convert_raw(ratings, "ratings")
    assert d.user_items(1).tolist() == [1, 2]  # user 5: item 200 (t=10) then 100 (t=20)
    jodie = tmp_path / "wiki.csv"
    jodie.write_text("user_id,item_id,timestamp,state_label,f\n0,3,2.0,0,0.1\n0,4,1.0,0,0.2\n1,3,0.5,0,0.3\n")
    j = data.convert_raw(jodie, "jodie")
    assert j.user_items(1).tolist() == [1]  # user 1 first in time (t=0.5) with item 3 -> id 1
    assert j.user_items(2).tolist() == [2, 1]


def test_write_pairs_roundtrip(tiny_file: Path, tmp_path: Path) -> None:
    d = data.read_pairs(tiny_file)
    back = data.read_pairs(convert.write_pairs(d, tmp_path / "out.txt"))
    assert np.array_equal(back.items, d.items) and np.array_equal(back.offsets, d.offsets)
