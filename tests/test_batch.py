"""The batch job (`helpers.batch`, `python -m helpers.recommend --all-users`) on tiny data: the same answer as
`recommend` user for user, parts that a relaunched job skips, two gloo processes, and every bad input refused in
one line with nothing written."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

from helpers import batch, convert, data, recommend
from helpers.checkpoint import data_record, save_checkpoint
from helpers.distributed import World, process_group
from helpers.errors import ConfigError, DataError
from helpers.model import SSEPT, load_checkpoint
from helpers.settings import SSEPTConfig
from helpers.utils import run_cli
from tests.tolerance import assert_close_scaled

N_USERS, N_ITEMS, MAXLEN = 9, 15, 5


def tiny_data(seed: int = 0) -> data.SequenceData:
    """Nine users with 1 to 12 items (some longer than MAXLEN, some with repeats), user 4 without rows."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for user in range(1, N_USERS + 1):
        if user == 4:
            continue
        n = 1 + (user * 5) % 12
        users += [user] * n
        items += rng.integers(1, N_ITEMS + 1, size=n).tolist()
    items[-1] = N_ITEMS  # the catalogue's size is its largest id
    return data.pairs_to_sequences(np.array(users), np.array(items), "tiny")


def tiny_model(user_dim: int = 4, copy_slots: int = 0, seed: int = 0) -> SSEPT:
    torch.manual_seed(seed)
    config = SSEPTConfig(n_users=N_USERS, n_items=N_ITEMS, item_dim=4, user_dim=user_dim, maxlen=MAXLEN,
                         num_blocks=1, dropout=0.5, copy_slots=copy_slots)
    model = SSEPT(config)
    if model.copy_bonus is not None:
        with torch.no_grad():
            model.copy_bonus.copy_(torch.linspace(1.0, 0.1, copy_slots + 1))
    return model.eval()


def write_checkpoint(model: SSEPT, dataset: data.SequenceData, path: Path) -> Path:
    """A checkpoint of `model` that records `dataset` (what the command line checks)."""
    save_checkpoint(path, {"config": dataclasses.asdict(model.config), "train": None, "data": data_record(dataset),
                           "model": model.state_dict(), "optimizer": None, "epoch": 0, "history": [], "best": {}})
    return path


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to float32 rounding scaled by the largest |entry| (a batch may take other kernels)."""
    assert_close_scaled(torch.as_tensor(actual), torch.as_tensor(expected))


def assert_same_output(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    """The same users, ranks and items, and scores equal up to float32 rounding (other batch shapes run other
    kernels)."""
    pd.testing.assert_frame_equal(actual.drop(columns="score"), expected.drop(columns="score"))
    assert_close(actual["score"].to_numpy(np.float32), expected["score"].to_numpy(np.float32))


def assert_equals_recommend(out: Path | pd.DataFrame, model: SSEPT, dataset: data.SequenceData, k: int,
                            keep_seen: bool = False) -> None:
    frame = batch.read_output(out) if isinstance(out, Path) else out
    users = batch.users_with_rows(dataset)
    assert sorted(set(frame["user"].astype(int))) == users.tolist()
    for user, rows in frame.groupby(frame["user"].astype(int)):
        recs = recommend.recommend(model, dataset.user_items(user), user, k, allow_repeats=keep_seen)
        assert rows["rank"].tolist() == list(range(1, recs.items.size + 1))
        assert rows["item"].astype(int).tolist() == recs.items.tolist(), f"user {user}"
        assert_close(rows["score"].to_numpy(np.float32), recs.scores)


@pytest.fixture(params=["ssept", "sasrec", "copy-bonus"])
def model(request: pytest.FixtureRequest) -> SSEPT:
    return {"ssept": lambda: tiny_model(), "sasrec": lambda: tiny_model(user_dim=0),
            "copy-bonus": lambda: tiny_model(copy_slots=3)}[request.param]()


# --------------------------------------------------------------------------- the answer


@pytest.mark.parametrize("keep_seen", [False, True])
def test_batch_equals_recommend_for_every_user(model: SSEPT, keep_seen: bool, tmp_path: Path) -> None:
    """Blocks of 2 users and 4 items, parts of 3 users: each user's rows are `recommend`'s answer."""
    dataset = tiny_data()
    k = 12  # more than some users have left when their history is removed: they get fewer rows
    summary = batch.write_recommendations(model, dataset, tmp_path / "out", k, "digest", keep_seen=keep_seen,
                                          part_users=3, batch_users=2, block_size=4)
    assert summary["users"] == 8 and summary["parts_written"] == 3 and summary["parts_skipped"] == 0
    assert_equals_recommend(tmp_path / "out", model, dataset, k, keep_seen)
    manifest = json.loads((tmp_path / "out" / batch.MANIFEST).read_text())
    assert manifest["complete"] and [p["file"] for p in manifest["parts"]] == [
        "part-00000.csv", "part-00001.csv", "part-00002.csv"]
    assert sum(p["rows"] for p in manifest["parts"]) == manifest["rows"] == summary["rows"]
    single = batch.write_recommendations(model, dataset, tmp_path / "all.csv", k, "digest", keep_seen=keep_seen,
                                         batch_users=3)
    assert_same_output(batch.read_output(tmp_path / "all.csv"), batch.read_output(tmp_path / "out"))
    assert single["rows"] == summary["rows"]


def test_ties_break_by_the_smaller_id_as_recommend_does(tmp_path: Path) -> None:
    """An all-zero item table scores every item alike: the smallest ids not in the history come first."""
    dataset, model = tiny_data(), tiny_model()
    with torch.no_grad():
        model.item_emb.weight.zero_()
    batch.write_recommendations(model, dataset, tmp_path / "out.csv", 3, "d")
    frame = batch.read_output(tmp_path / "out.csv")
    for user, rows in frame.groupby(frame["user"].astype(int)):
        seen = set(dataset.user_items(user).tolist())
        assert rows["item"].astype(int).tolist() == [i for i in range(1, N_ITEMS + 1) if i not in seen][:3]


@pytest.fixture
def converted(tmp_path: Path) -> tuple[Path, Path, SSEPT]:
    """A CSV with string ids converted (id maps beside it), and a checkpoint for it: (dataset, checkpoint, model)."""
    shows = ["news", "quiz", "drama", "film", "sport", "kids", "docs", "opera", "chess"]
    lines = ["viewer,show,ts"] + [f"v{v:02d},{shows[(v * 3 + 2 * t) % len(shows)]},{100 * v + t}"
                                  for v in range(7) for t in range(2 + v % 4)]
    (tmp_path / "views.csv").write_text("\n".join(lines) + "\n")
    dataset = convert.write_converted(convert.convert_csv(tmp_path / "views.csv", "viewer", "show", "ts"),
                                      tmp_path / "views.txt")
    loaded = data.load(dataset)
    torch.manual_seed(3)
    model = SSEPT(SSEPTConfig(n_users=loaded.n_users, n_items=loaded.n_items, item_dim=4, user_dim=4,
                              maxlen=MAXLEN, num_blocks=1)).eval()
    return dataset, write_checkpoint(model, loaded, tmp_path / "model.pt"), model


def test_command_line_equals_recommend_user_in_original_ids(converted: tuple[Path, Path, SSEPT], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    dataset, ckpt, _ = converted
    base = ["--checkpoint", str(ckpt), "--dataset", str(dataset), "--k", "3"]
    assert recommend.main([*base, "--all-users", "--out", str(tmp_path / "recs"), "--part-users", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    frame = batch.read_output(tmp_path / "recs")
    assert summary["users"] == 7 and summary["rows"] == len(frame) and summary["parts_written"] == 4
    for user, rows in frame.groupby("user"):
        assert user.startswith("v")  # the CSV's own ids, not the project's numbers
        assert recommend.main([*base, "--user", user, "--json"]) == 0
        expected = json.loads(capsys.readouterr().out)["recommendations"]
        assert rows["item"].tolist() == [r["item"] for r in expected]
        np.testing.assert_allclose(rows["score"].to_numpy(), [r["score"] for r in expected], atol=1e-4)
    (tmp_path / "some.txt").write_text("v05\n\nv01\nv05\n")
    assert recommend.main([*base, "--all-users", "--users", str(tmp_path / "some.txt"), "--keep-seen",
                           "--out", str(tmp_path / "some.csv")]) == 0
    some = batch.read_output(tmp_path / "some.csv")
    assert some["user"].unique().tolist() == ["v01", "v05"] and len(some) == 6


# --------------------------------------------------------------------------- a killed job


def test_a_killed_job_resumes_and_skips_finished_parts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Interrupted in its third part (as by a kill): two whole parts and no partial one; a relaunch leaves those
    two untouched, removes a killed writer's temporary file, and the result equals an uninterrupted run."""
    dataset, model = tiny_data(), tiny_model()
    kwargs = {"part_users": 2, "batch_users": 1}
    reference = batch.write_recommendations(model, dataset, tmp_path / "whole", 4, "d", **kwargs)
    scored, real = [0], batch.top_k_users

    def dies_on_the_fifth_block(*args: object, **more: object) -> object:
        scored[0] += 1
        if scored[0] == 5:  # the first user of the third part
            raise KeyboardInterrupt
        return real(*args, **more)

    out = tmp_path / "job"
    monkeypatch.setattr(batch, "top_k_users", dies_on_the_fifth_block)
    with pytest.raises(KeyboardInterrupt):
        batch.write_recommendations(model, dataset, out, 4, "d", **kwargs)
    monkeypatch.setattr(batch, "top_k_users", real)
    assert sorted(p.name for p in out.iterdir()) == [batch.MANIFEST, "part-00000.csv", "part-00001.csv"]
    assert not json.loads((out / batch.MANIFEST).read_text())["complete"]
    (out / ".part-00002.csv.0123abcd.tmp").write_text("user,rank,item,score\n1,1,")  # what a SIGKILL leaves
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
    resumed = batch.write_recommendations(model, dataset, out, 4, "d", **kwargs)
    assert resumed["parts_skipped"] == 2 and resumed["parts_written"] == reference["parts_written"] - 2
    assert {p: (out / p).stat().st_mtime_ns for p in before} == before
    assert not list(out.glob(".*.tmp"))
    pd.testing.assert_frame_equal(batch.read_output(out), batch.read_output(tmp_path / "whole"))
    again = batch.write_recommendations(model, dataset, out, 4, "d", **kwargs)  # everything done: nothing rewritten
    assert again["parts_written"] == 0 and again["rows"] == reference["rows"]


# --------------------------------------------------------------------------- two processes


def _rank_job(rank: int, tmp: str, dataset: str, ckpt: str) -> None:
    """One of two gloo processes writing the same folder."""
    torch.set_num_threads(1)
    model, _ = load_checkpoint(ckpt)
    with process_group("gloo", world=World(rank, 2, rank), init_method=f"file://{tmp}/store") as world:
        summary = batch.write_recommendations(model, data.load(dataset), Path(tmp) / "two", 4, "d", part_users=2,
                                              batch_users=2, world=world)
    Path(tmp, f"summary{rank}.json").write_text(json.dumps(summary))


def test_two_gloo_processes_write_what_one_writes(tmp_path: Path) -> None:
    dataset = tiny_data()
    path = convert.write_pairs(dataset, tmp_path / "tiny.txt")
    model = tiny_model()
    ckpt = write_checkpoint(model, dataset, tmp_path / "m.pt")
    one = batch.write_recommendations(model, data.load(path), tmp_path / "one", 4, "d", part_users=2)
    mp.spawn(_rank_job, args=(str(tmp_path), str(path), str(ckpt)), nprocs=2)
    manifest = json.loads((tmp_path / "two" / batch.MANIFEST).read_text())
    assert manifest["complete"] and manifest["processes"] == 2 and manifest["rows"] == one["rows"]
    assert [p["file"] for p in manifest["parts"]] == [f"part-{i:05d}.csv" for i in range(4)]
    assert len(manifest["last_run"]["peak_rss_mb_per_process"]) == 2
    summaries = [json.loads((tmp_path / f"summary{r}.json").read_text()) for r in range(2)]
    assert summaries[0] == {**summaries[1], "seconds": summaries[0]["seconds"]}
    pd.testing.assert_frame_equal(batch.read_output(tmp_path / "two"), batch.read_output(tmp_path / "one"))


# --------------------------------------------------------------------------- bad input


def _fails(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as info:
        run_cli(recommend.main, argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_bad_input_one_line_and_nothing_written(converted: tuple[Path, Path, SSEPT], tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    dataset, ckpt, model = converted
    base = ["--checkpoint", str(ckpt), "--dataset", str(dataset), "--all-users"]
    n_items = model.config.n_items
    out = tmp_path / "out"
    assert f"--k {n_items} must be at least 1 and below the number of items ({n_items})" in _fails(
        [*base, "--k", str(n_items), "--out", str(out)], capsys)
    (tmp_path / "users.txt").write_text("v01\nv77\n")
    assert "users.txt, line 2: unknown user 'v77'" in _fails(
        [*base, "--users", str(tmp_path / "users.txt"), "--out", str(out)], capsys)
    assert not out.exists()
    assert "--all-users needs --out" in _fails(base, capsys)
    assert "--out goes with --all-users" in _fails([*base[:-1], "--user", "v01", "--out", str(out)], capsys)

    assert recommend.main([*base, "--k", "2", "--out", str(out), "--part-users", "3"]) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "holds parts of another job (k 2 there, 3 here)" in _fails([*base, "--k", "3", "--out", str(out),
                                                                       "--part-users", "3"], capsys)
    other = tmp_path / "other.pt"
    torch.manual_seed(9)
    write_checkpoint(SSEPT(model.config).eval(), data.load(dataset), other)
    err = _fails(["--checkpoint", str(other), *base[2:], "--k", "2", "--out", str(out), "--part-users", "3"], capsys)
    assert "holds parts of another job (checkpoint_digest" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (tmp_path / "stranger").mkdir()
    (tmp_path / "stranger" / "notes.txt").write_text("mine")
    assert "is not empty and has no manifest.json" in _fails([*base, "--k", "2", "--out",
                                                                     str(tmp_path / "stranger")], capsys)


def test_parquet_without_pyarrow_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(__import__("sys").modules, "pyarrow.parquet", None)  # as if not installed
    with pytest.raises(ConfigError, match="Parquet output needs pyarrow, which is not installed: pip install pyarrow"):
        batch.write_recommendations(tiny_model(), tiny_data(), tmp_path / "x.parquet", 3, "d")
    assert not (tmp_path / "x.parquet").exists()


def test_parquet_equals_csv(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow.parquet")
    dataset, model = tiny_data(), tiny_model()
    same = {"part_users": 3, "batch_users": 3}  # the same blocks: the same float32 scores, bit for bit
    batch.write_recommendations(model, dataset, tmp_path / "a.csv", 4, "d", **same)
    batch.write_recommendations(model, dataset, tmp_path / "parts", 4, "d", fmt="parquet", **same)
    batch.write_recommendations(model, dataset, tmp_path / "b.parquet", 4, "d", **same)
    csv = batch.read_output(tmp_path / "a.csv")
    for out in (tmp_path / "parts", tmp_path / "b.parquet"):
        frame = batch.read_output(out)
        assert frame["user"].astype(int).tolist() == csv["user"].astype(int).tolist()
        assert frame["item"].astype(int).tolist() == csv["item"].astype(int).tolist()
        np.testing.assert_array_equal(frame["score"].to_numpy(np.float32), csv["score"].to_numpy(np.float32))


def test_users_file_errors(tmp_path: Path) -> None:
    dataset = tiny_data()
    (tmp_path / "u.txt").write_text("2\n4\n")
    with pytest.raises(DataError, match=r"u.txt, line 2: user '4' has no rows"):
        batch.read_users(tmp_path / "u.txt", dataset, None)
    (tmp_path / "u.txt").write_text("2\nx\n")
    with pytest.raises(DataError, match=r"line 2: unknown user 'x'"):
        batch.read_users(tmp_path / "u.txt", dataset, None)
    (tmp_path / "u.txt").write_text("3\n2\n3\n")
    assert batch.read_users(tmp_path / "u.txt", dataset, None).tolist() == [2, 3]
