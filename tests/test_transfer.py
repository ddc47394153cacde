"""The transfer study on a tiny slice: copied weights, frozen encoder, resumable rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import data
from helpers.checkpoint import read_checkpoint
from helpers.errors import ConfigError
from helpers.model import SSEPTConfig, load_checkpoint
from helpers.train import TrainConfig, fit
from helpers.transfer import SETUPS, new_item_users, run_study, summarize
from tests.test_train import SMALL, _synthetic


def test_new_item_users(tmp_path: Path) -> None:
    path = tmp_path / "r.txt"
    path.write_text("1 1\n1 2\n1 3\n1 3\n2 1\n2 2\n2 3\n2 4\n")  # user 1 repeats at test time
    assert new_item_users(data.leave_one_out(data.read_pairs(path))).tolist() == [2]


def test_study_on_tiny_data(tmp_path: Path) -> None:
    src = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "a.txt", users=150, items=40)))
    dst = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "b.txt", users=90, items=45, seed=3)))
    cfg = SSEPTConfig(src.data.n_users, src.data.n_items, **SMALL)
    tc = TrainConfig(epochs=2, batch_size=8, eval_every=1, eval_negatives=10)
    fit(src, cfg, tc, tmp_path / "pre", progress=False)
    pretrained = tmp_path / "pre" / "best.pt"
    csv = tmp_path / "study.csv"
    frame = run_study(dst, pretrained, tc, csv, tmp_path / "runs", setups=SETUPS, fractions=(0.5, 1.0),
                      seeds=(0,), progress=False)
    models = frame[frame["kind"] == "model"]
    assert len(models) == len(SETUPS) * 2
    assert set(frame["setup"]) >= {"popularity", "repeat-last", "most-frequent", "frozen", "scratch"}
    for col in ("sampled_ndcg@10", "full_ndcg@10", "fullkeep_hr@10", "new_fullkeep_mrr"):
        assert frame[col].between(0, 1).all(), col

    # The frozen run's encoder is exactly the pretrained one; fine-tuning moved it.
    pre = read_checkpoint(pretrained)["model"]
    frozen, _ = load_checkpoint(tmp_path / "runs" / "frozen-f1.0-s0" / "best.pt")
    tuned, _ = load_checkpoint(tmp_path / "runs" / "fine-tune-f1.0-s0" / "best.pt")
    enc = [k for k in pre if k.startswith(("blocks.", "pos_emb.", "final_norm."))]
    assert all(torch.equal(frozen.state_dict()[k], pre[k]) for k in enc)
    assert not all(torch.equal(tuned.state_dict()[k], pre[k]) for k in enc)
    assert tuned.config.n_items == 45 and tuned.config.dim == pre["pos_emb.weight"].shape[1]

    # A second call finds every row done and trains nothing.
    again = run_study(dst, pretrained, tc, csv, tmp_path / "runs", fractions=(0.5, 1.0), seeds=(0,), progress=False)
    assert len(again) == len(frame)
    assert set(again["pretrained"]) == {"best.pt"}
    # Rows of a study from another checkpoint are not mixed in.
    other = tmp_path / "other.pt"
    other.write_bytes(pretrained.read_bytes())
    with pytest.raises(ConfigError, match="holds rows of a study from pretrained"):
        run_study(dst, other, tc, csv, tmp_path / "runs", fractions=(0.5, 1.0), seeds=(0,), progress=False)
    summary = summarize(again)
    assert np.isfinite(summary["sampled_ndcg@10_mean"]).all()
