"""`fit`'s `on_epoch` hook and `splits`, and the TensorBoard log built on them (`--tensorboard`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from helpers import data
from helpers.errors import ConfigError
from helpers.settings import SSEPTConfig, TrainConfig
from helpers.tensorboard_log import INSTALL_HINT, require_tensorboard
from helpers.train import fit
from helpers.train import main as train_main
from tests.test_train import _synthetic

SMALL = {"item_dim": 16, "user_dim": 8, "maxlen": 20, "num_blocks": 1, "attn_dropout": 0.3, "ffn_dropout": 0.1}


def _split(tmp_path: Path) -> data.Split:
    return data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "s.txt", users=60)))


def _configs(split: data.Split, **train: Any) -> tuple[SSEPTConfig, TrainConfig]:
    model = SSEPTConfig(split.data.n_users, split.data.n_items, **SMALL)
    return model, TrainConfig(**{"epochs": 4, "eval_every": 2, "batch_size": 16, "eval_negatives": 10, "seed": 3,
                                 "p_sub": 0.5, **train})


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


class HookError(Exception):
    pass


def test_the_hook_sees_every_epoch_and_changes_nothing(tmp_path: Path) -> None:
    split = _split(tmp_path)
    plain = fit(split, *_configs(split), progress=False)
    rows: list[tuple[int, dict[str, Any]]] = []
    hooked = fit(split, *_configs(split), progress=False, on_epoch=lambda epoch, row: rows.append((epoch, row)))
    _same_weights(plain.model, hooked.model)
    assert [epoch for epoch, _ in rows] == [1, 2, 3, 4]
    assert ["valid_ndcg@10" in row for _, row in rows] == [False, True, False, True]
    assert [row["loss"] for _, row in rows] == hooked.history["loss"].tolist()


def test_a_hook_that_raises_stops_the_run_which_then_resumes_exactly(tmp_path: Path) -> None:
    split = _split(tmp_path)
    whole = fit(split, *_configs(split), progress=False)

    def stop_at_2(epoch: int, row: dict[str, Any]) -> None:
        if epoch == 2:
            raise HookError

    with pytest.raises(HookError):
        fit(split, *_configs(split), tmp_path / "run", progress=False, on_epoch=stop_at_2, log=lambda _: None)
    resumed = fit(split, *_configs(split), tmp_path / "run", resume=True, progress=False, log=lambda _: None)
    _same_weights(whole.model, resumed.model)
    assert resumed.best == whole.best


def test_validation_alone_keeps_the_test_split_unseen_and_trains_alike(tmp_path: Path) -> None:
    split = _split(tmp_path)
    both = fit(split, *_configs(split), progress=False)
    valid = fit(split, *_configs(split), progress=False, splits=("valid",))
    _same_weights(both.model, valid.model)
    assert not [c for c in valid.history.columns if c.startswith("test_")]
    assert valid.best == {k: v for k, v in both.best.items() if not k.startswith("test_")}
    with pytest.raises(ConfigError, match="splits must be"):
        fit(split, *_configs(split), progress=False, splits=("test",))


def test_tensorboard_gets_loss_metrics_lr_and_seconds(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _synthetic(tmp_path / "s.txt", users=60)
    board = tmp_path / "board"
    argv = ["--dataset", str(tmp_path / "s.txt"), "--out", str(tmp_path / "run"), "--epochs", "2", "--eval-every",
            "1", "--item-dim", "8", "--user-dim", "8", "--maxlen", "10", "--eval-negatives", "10", "--batch-size", "16",
            "--quiet",
            "--device", "cpu", "--tensorboard", str(board)]
    assert train_main(argv) == 0
    events = EventAccumulator(str(board))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/seconds_per_epoch", "valid/ndcg@10", "test/ndcg@10"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert events.Scalars("train/lr")[0].value == pytest.approx(1e-3)


def test_without_tensorboard_the_flag_fails_in_one_line_naming_the_extra(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # importing it now raises ImportError
    with pytest.raises(ConfigError) as err:
        require_tensorboard()
    assert "[tune]" in str(err.value) and INSTALL_HINT in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="tensorboard"):  # before the dataset is even read
        train_main(["--dataset", str(tmp_path / "missing.txt"), "--tensorboard", str(tmp_path / "board")])
    assert not (tmp_path / "board").exists()
