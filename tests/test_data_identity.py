"""Data recognised by content: checkpoints record the data's digest; transfer, evaluation, recommendations and
resuming compare it (a checkpoint or run.json from before it was recorded falls back to the sizes, and says so)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from helpers import data
from helpers import evaluate as evaluate_module
from helpers import recommend as recommend_module
from helpers.checkpoint import read_checkpoint, save_checkpoint
from helpers.errors import CheckpointError, ConfigError
from helpers.model import SSEPT
from helpers.train import fit, training_setup
from tests.test_train import TC, _config, _synthetic


@pytest.fixture
def twins(tmp_path: Path) -> tuple[Path, Path]:
    """Two different files of the same name and the same largest ids: `interactions.txt` in a/ and b/."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _synthetic(tmp_path / "a" / "interactions.txt", seed=0)
    b = _synthetic(tmp_path / "b" / "interactions.txt", seed=1)
    da, db = data.read_pairs(a), data.read_pairs(b)
    assert (da.name, da.n_users, da.n_items) == (db.name, db.n_users, db.n_items)
    assert da.digest() != db.digest()
    return a, b


def _trained(path: Path, out: Path) -> data.Split:
    split = data.leave_one_out(data.read_pairs(path))
    fit(split, _config(split), TC(epochs=1), out, progress=False)
    return split


def _started(split: data.Split, init_from: Path, log: Callable[[str], None] = print) -> SSEPT:
    """The model `fit` starts from with `init_from` (before any training)."""
    return training_setup(split, _config(split), TC(epochs=1), torch.device("cpu"), init_from, log=log)[0]


def _without_digest(src: Path, dest: Path) -> Path:
    """A copy of a checkpoint as written before the digest was recorded."""
    ckpt = read_checkpoint(src)
    ckpt["data"] = {k: v for k, v in ckpt["data"].items() if k != "digest"}
    ckpt.pop("format")
    save_checkpoint(dest, ckpt)
    return dest


def test_every_checkpoint_records_the_data_digest(tmp_path: Path, twins: tuple[Path, Path]) -> None:
    split = _trained(twins[0], tmp_path / "run")
    for name in ("best.pt", "last.pt", "prev.pt"):
        if (tmp_path / "run" / name).exists():
            assert read_checkpoint(tmp_path / "run" / name)["data"]["digest"] == split.data.digest(), name
    assert json.loads((tmp_path / "run" / "run.json").read_text())["data_digest"] == split.data.digest()


def test_tables_are_copied_only_for_the_same_data(tmp_path: Path, twins: tuple[Path, Path]) -> None:
    a, b = twins
    _trained(a, tmp_path / "src")
    source = read_checkpoint(tmp_path / "src" / "last.pt")["model"]
    other = data.leave_one_out(data.read_pairs(b))  # same name and sizes, other rows
    fresh = training_setup(other, _config(other), TC(epochs=1), torch.device("cpu"))[0].state_dict()
    state = _started(other, tmp_path / "src" / "last.pt").state_dict()
    assert torch.equal(state["pos_emb.weight"], source["pos_emb.weight"])  # the encoder is copied
    for table in ("item_emb.weight", "user_emb.weight"):
        assert not torch.equal(state[table], source[table]), f"{table} copied from other data"
        assert torch.equal(state[table], fresh[table])
    # The same rows under another file name are the same data: the tables are copied.
    copy = tmp_path / "copy.txt"
    shutil.copyfile(a, copy)
    same = data.leave_one_out(data.read_pairs(copy))
    state = _started(same, tmp_path / "src" / "last.pt").state_dict()
    for table in ("item_emb.weight", "user_emb.weight"):
        assert torch.equal(state[table], source[table]), table


def test_transfer_from_a_checkpoint_without_digest_goes_by_name_and_sizes(tmp_path: Path,
                                                                         twins: tuple[Path, Path]) -> None:
    a, _ = twins
    _trained(a, tmp_path / "src")
    old = _without_digest(tmp_path / "src" / "last.pt", tmp_path / "old.pt")
    split = data.leave_one_out(data.read_pairs(a))
    lines: list[str] = []
    model = _started(split, old, lines.append)
    noted = [line for line in lines if "digest" in line]
    assert len(noted) == 1 and "name and sizes" in noted[0], lines
    assert "old.pt" in noted[0] and str(tmp_path) not in noted[0]  # no machine path in printed output
    assert torch.equal(model.state_dict()["item_emb.weight"], read_checkpoint(old)["model"]["item_emb.weight"])


def test_transfer_to_other_data_from_a_checkpoint_without_digest_says_nothing(tmp_path: Path) -> None:
    """Only the encoder moves to data of other sizes, so the name-and-sizes fallback decides nothing to note."""
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    for path, users, items in ((small, 20, 40), (large, 30, 61)):  # six distinct items per user
        path.write_text("".join(f"{u} {1 + (7 * u + 3 * t) % items}\n" for u in range(1, users + 1) for t in range(6)))
    _trained(small, tmp_path / "src")
    old = _without_digest(tmp_path / "src" / "last.pt", tmp_path / "old.pt")
    lines: list[str] = []
    _started(data.leave_one_out(data.read_pairs(large)), old, lines.append)
    assert not [line for line in lines if "digest" in line], lines


def _evaluate(ckpt: Path, dataset: Path, *extra: str) -> list[str]:
    return ["--checkpoint", str(ckpt), "--dataset", str(dataset), "--protocol", "full", *extra]


def test_evaluate_refuses_other_data_naming_both(tmp_path: Path, twins: tuple[Path, Path],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    a, b = twins
    _trained(a, tmp_path / "src")
    best = tmp_path / "src" / "best.pt"
    assert evaluate_module.main(_evaluate(best, a)) == 0
    with pytest.raises(CheckpointError) as info:
        evaluate_module.main(_evaluate(best, b))
    message = str(info.value)
    assert "\n" not in message and "--allow-other-data" in message
    assert message.count("interactions") >= 2 and "best.pt" in message
    capsys.readouterr()
    assert evaluate_module.main(_evaluate(best, b, "--allow-other-data")) == 0
    assert json.loads(capsys.readouterr().out)["users"] > 0


def test_evaluate_without_digest_checks_sizes_and_says_so(tmp_path: Path, twins: tuple[Path, Path],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    a, b = twins
    _trained(a, tmp_path / "src")
    old = _without_digest(tmp_path / "src" / "best.pt", tmp_path / "old.pt")
    capsys.readouterr()
    assert evaluate_module.main(_evaluate(old, b)) == 0
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if "digest" in line]) == 1 and "sizes" in err


def test_recommend_refuses_other_data_naming_both(tmp_path: Path, twins: tuple[Path, Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    a, b = twins
    _trained(a, tmp_path / "src")
    best = tmp_path / "src" / "best.pt"
    argv = ["--checkpoint", str(best), "--user", "3", "--json"]
    assert recommend_module.main([*argv, "--dataset", str(a)]) == 0
    with pytest.raises(CheckpointError) as info:
        recommend_module.main([*argv, "--dataset", str(b)])
    message = str(info.value)
    assert "\n" not in message and "--allow-other-data" in message and message.count("interactions") >= 2
    capsys.readouterr()
    assert recommend_module.main([*argv, "--dataset", str(b), "--allow-other-data"]) == 0
    assert json.loads(capsys.readouterr().out)["recommendations"]
    old = _without_digest(best, tmp_path / "old.pt")
    assert recommend_module.main(["--checkpoint", str(old), "--user", "3", "--json", "--dataset", str(b)]) == 0
    assert "sizes" in capsys.readouterr().err


def test_a_run_does_not_resume_on_other_data(tmp_path: Path, twins: tuple[Path, Path]) -> None:
    a, b = twins
    _trained(a, tmp_path / "run")
    other = data.leave_one_out(data.read_pairs(b))
    with pytest.raises(ConfigError, match="data_digest"):
        fit(other, _config(other), TC(epochs=2), tmp_path / "run", resume=True, progress=False)


def test_a_run_json_without_digest_still_resumes(tmp_path: Path, twins: tuple[Path, Path]) -> None:
    """Run folders written before the digest was recorded (run.json and checkpoints) go on as before."""
    a, _ = twins
    split = _trained(a, tmp_path / "run")
    run = tmp_path / "run" / "run.json"
    stored = json.loads(run.read_text())
    stored.pop("data_digest", None)
    run.write_text(json.dumps(stored, indent=2, sort_keys=True))
    for name in ("last.pt", "best.pt"):
        _without_digest(tmp_path / "run" / name, tmp_path / "run" / name)
    got = fit(split, _config(split), TC(epochs=2), tmp_path / "run", resume=True, progress=False)
    assert got.history["epoch"].tolist() == [1, 2]
