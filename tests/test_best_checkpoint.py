"""The best checkpoint and the best metrics always agree: the model `fit` returns, best.pt and `result.best` are
the same epoch's, also after a kill between the two writes of an epoch, a damaged last.pt or a missing best.pt."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import data
from helpers import train as train_module
from helpers.checkpoint import read_checkpoint, save_checkpoint
from helpers.errors import CheckpointError
from helpers.evaluate import Evaluator
from helpers.runs import RunFolder
from helpers.train import FitResult, fit
from tests.test_train import TC, _config, _synthetic


class Killed(BaseException):
    """The process dying between two writes."""


def _split(tmp_path: Path) -> data.Split:
    return data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "s.txt")))


def _agree(result: FitResult, split: data.Split, folder: Path) -> None:
    """The returned model, best.pt and result.best are one epoch's."""
    best = read_checkpoint(folder / "best.pt")
    assert best["epoch"] == best["best"]["epoch"] == result.best["epoch"]
    assert best["best"]["valid_ndcg@10"] == result.best["valid_ndcg@10"]
    for name, value in result.model.state_dict().items():
        assert torch.equal(value.cpu(), best["model"][name]), name
    valid = Evaluator(split, "valid", "sampled", seed=0, n_negatives=10)(result.model)
    assert valid["ndcg@10"] == pytest.approx(result.best["valid_ndcg@10"], abs=1e-12)


def _peak_at(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """Validation that peaks at `epoch` (later evaluations score lower), so the best epoch is not the last."""
    real = train_module._evaluate

    def evaluate(job, at):  # noqa: ANN001, ANN202
        row = real(job, at)
        if at > epoch:
            row["valid_ndcg@10"] -= 1.0
        return row

    monkeypatch.setattr(train_module, "_evaluate", evaluate)


@pytest.mark.parametrize("damage_last", [False, True])
def test_a_kill_between_the_two_writes_leaves_best_and_record_agreeing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage_last: bool) -> None:
    split, out = _split(tmp_path), tmp_path / "run"
    real = RunFolder.save_last
    killed: dict[str, int] = {}

    def save_last(self: RunFolder, payload: dict) -> None:
        written = read_checkpoint(self.best)["epoch"] if self.best.exists() else 0
        if payload["epoch"] >= 3 and written == payload["epoch"]:  # best.pt of this epoch is written, last.pt not
            killed["epoch"] = payload["epoch"]
            raise Killed
        real(self, payload)

    monkeypatch.setattr(RunFolder, "save_last", save_last)
    with pytest.raises(Killed):
        fit(split, _config(split), TC(epochs=12, eval_every=1, seed=2), out, progress=False)
    monkeypatch.setattr(RunFolder, "save_last", real)
    if damage_last:  # resume from prev.pt, two epochs before best.pt's
        raw = (out / "last.pt").read_bytes()
        (out / "last.pt").write_bytes(raw[: len(raw) // 3])
    resumed_at = killed["epoch"] - (2 if damage_last else 1)
    # Resumed with a cap at the epoch it resumes from: the epochs after it are not run again, so nothing
    # redoes the epoch of the newer best.pt (as when a rerun on another device or process count differs).
    result = fit(split, _config(split), TC(epochs=resumed_at, eval_every=1, seed=2), out, resume=True,
                 progress=False)
    assert result.history["epoch"].max() == resumed_at
    assert result.best["epoch"] <= resumed_at
    _agree(result, split, out)


def test_a_missing_best_pt_is_never_the_last_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    split, out = _split(tmp_path), tmp_path / "run"
    _peak_at(monkeypatch, 2)
    fit(split, _config(split), TC(epochs=4, eval_every=1, seed=2), out, progress=False)
    (out / "best.pt").unlink()
    result = fit(split, _config(split), TC(epochs=4, eval_every=1, seed=2), out, resume=True, progress=False)
    assert result.best["epoch"] == 2
    _agree(result, split, out)


def test_a_checkpoint_whose_best_weights_are_gone_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A last.pt written before it carried the best weights, with best.pt of another epoch: refused, not mixed."""
    split, out = _split(tmp_path), tmp_path / "run"
    _peak_at(monkeypatch, 2)
    fit(split, _config(split), TC(epochs=4, eval_every=1, seed=2), out, progress=False)
    last = read_checkpoint(out / "last.pt")
    last.pop("best_model", None)
    last.pop("format")
    save_checkpoint(out / "last.pt", last)
    other = read_checkpoint(out / "prev.pt")  # epoch 3's weights, labelled as a best of epoch 3
    other["best"] = dict(other["best"]) | {"epoch": 3}
    other.pop("format")
    save_checkpoint(out / "best.pt", other)
    with pytest.raises(CheckpointError, match="best.pt holds epoch 3.*records its best at epoch 2"):
        fit(split, _config(split), TC(epochs=5, eval_every=1, seed=2), out, resume=True, progress=False)
