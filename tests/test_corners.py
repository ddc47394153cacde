"""Corners: the padding never competes in a full ranking, a candidate without full-ranking metrics does not meet
the target, the test-time input holds the validation item, and atomic writes are durable without the umask."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import data
from helpers import utils as utils_module
from helpers.evaluate import Evaluator, input_windows
from helpers.metrics import blockwise_full_ranks, full_ranks
from helpers.studies import candidates
from helpers.utils import atomic_write

# --------------------------------------------------------------------------- the padding


def test_full_ranks_never_count_the_padding_whatever_its_score() -> None:
    """Item 0 scores highest here (a scorer that does not write -inf there): it is still no competitor."""
    table = torch.tensor([[9.0, 1.0, 2.0, 0.5], [9.0, 3.0, 2.0, 1.0]])
    assert full_ranks(table, torch.tensor([2, 1])).tolist() == [0, 0]
    for size in (1, 2, 4):
        blocks = [(a, min(a + size, 4)) for a in range(0, 4, size)]
        got = blockwise_full_ranks(lambda items: table[:, items], torch.tensor([2, 1]), blocks)
        assert got.tolist() == [0, 0], size
    nan_padding = table.clone()
    nan_padding[:, 0] = float("nan")  # not a score of anything: no error either
    assert full_ranks(nan_padding, torch.tensor([2, 1])).tolist() == [0, 0]


class _Recorder:
    """A scorer that records the input windows it is given; it scores item 0 highest."""

    maxlen = 3

    def __init__(self, n_items: int) -> None:
        self.n_items, self.seen = n_items, []

    def predict(self, users: torch.Tensor, seqs: torch.Tensor, candidates: torch.Tensor | None) -> torch.Tensor:
        self.seen.append(seqs.clone())
        scores = torch.arange(self.n_items + 1, dtype=torch.float32).flip(0).repeat(users.shape[0], 1)
        scores[:, 0] = 1e9
        return scores if candidates is None else scores.gather(1, candidates)


# --------------------------------------------------------------------------- the test-time input


def test_the_test_input_holds_the_validation_item(tiny_file: Path) -> None:
    """tiny.txt: user 1 saw 1 2 3 4 5 (valid target 4, test target 5); user 3 saw 6 5 4 3 (targets 4 and 3)."""
    split = data.leave_one_out(data.read_pairs(tiny_file))
    users = np.array([1, 3])
    assert split.targets("valid")[users].tolist() == [4, 4]
    assert split.targets("test")[users].tolist() == [5, 3]
    assert input_windows(split, users, "valid", 10).tolist() == [[1, 2, 3], [0, 6, 5]]
    assert input_windows(split, users, "test", 10).tolist() == [[1, 2, 3, 4], [0, 6, 5, 4]]
    assert input_windows(split, users, "test", 2).tolist() == [[3, 4], [5, 4]]
    # What the evaluation feeds a scorer: the last item of each test input is the validation item.
    scorer = _Recorder(split.data.n_items)
    ranks = Evaluator(split, "test", "full", remove_history=False).ranks(scorer)
    fed = torch.cat([s[:, -1] for s in scorer.seen]).tolist()
    assert sorted(fed) == sorted(split.targets("valid")[split.eval_users].tolist())
    # Scores fall with the item id and the padding is no competitor: the rank of target t is t - 1.
    assert ranks.tolist() == [int(t) - 1 for t in split.targets("test")[Evaluator(split, "test", "full").users]]


# --------------------------------------------------------------------------- candidates


def _candidate_folder(tmp_path: Path, full: str | None) -> Path:
    """A run folder of a short training, with full_test.json holding `full` (None: no such file)."""
    from helpers.train import fit
    from tests.test_train import TC, _config, _synthetic

    split = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "s.txt")))
    folder = tmp_path / "run"
    fit(split, _config(split), TC(epochs=1), folder, progress=False)
    if full is not None:
        (folder / "full_test.json").write_text(full)
    return folder


def test_meets_is_false_without_full_ranking_metrics() -> None:
    above = {k: v + 0.1 for k, v in candidates.QUALITY_TARGET.items()}
    assert candidates.meets(above)
    assert not candidates.meets(above | {"full_ndcg@10": None, "full_hr@10": None})
    assert not candidates.meets({k: v for k, v in above.items() if not k.startswith("full_")})


@pytest.mark.parametrize("full", [None, ""])
def test_a_candidate_whose_full_test_json_is_missing_or_empty(tmp_path: Path, full: str | None) -> None:
    record = candidates.candidate_record(_candidate_folder(tmp_path, full))
    assert record["full_ndcg@10"] is None and record["meets_target"] is False
    json.dumps(record, default=str)


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_fsyncs_the_folder_after_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src: object, dst: object) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(utils_module.os, "fsync", fsync)
    monkeypatch.setattr(utils_module.os, "replace", replace)
    atomic_write(tmp_path / "f.txt", lambda f: f.write(b"hello"))
    assert (tmp_path / "f.txt").read_bytes() == b"hello"
    assert events == ["fsync file", "rename", "fsync folder"]


def test_atomic_write_never_changes_the_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The umask is process-wide: setting it, even for an instant, races with every other thread's files."""
    mask = os.umask(0o027)
    os.umask(0o027)
    try:
        def refuse(value: int) -> int:
            raise AssertionError("os.umask called")

        monkeypatch.setattr(utils_module.os, "umask", refuse)
        path = atomic_write(tmp_path / "f.txt", lambda f: f.write(b"x"))
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~0o027  # the usual permissions, as open() gives
        assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    finally:
        monkeypatch.undo()
        os.umask(mask)


def test_no_code_sets_the_umask() -> None:
    root = Path(__file__).resolve().parents[1] / "helpers"
    found = [str(p.relative_to(root)) for p in root.rglob("*.py") if "os.umask(" in p.read_text()]
    assert found == []
