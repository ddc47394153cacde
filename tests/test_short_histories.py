"""The short-history study: proxies, settings, results file, and exact resume with the new dropouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import data
from helpers.errors import ConfigError
from helpers.settings import SSEPTConfig, TrainConfig
from helpers.studies.short_histories import (
    CLI_DEFAULT,
    VARIANTS,
    append_row,
    keep_last,
    markdown,
    study_configs,
    summary_table,
)
from helpers.train import fit
from tests.test_train import cli_configs


def _tiny() -> data.SequenceData:
    """Four users with 1, 3, 5 and 8 items over 9 items."""
    lengths = [1, 3, 5, 8]
    users = np.repeat(np.arange(1, 5), lengths)
    items = np.concatenate([np.arange(1, n + 1) for n in lengths])
    return data.pairs_to_sequences(users, items, "tiny")


def test_keep_last_keeps_each_users_latest_items() -> None:
    full = _tiny()
    short = keep_last(full, 4, "tiny-last4")
    assert short.name == "tiny-last4" and (short.n_users, short.n_items) == (full.n_users, full.n_items)
    assert short.lengths[1:5].tolist() == [1, 3, 4, 4]
    for user in range(1, 5):
        assert short.user_items(user).tolist() == full.user_items(user)[-4:].tolist()


def test_study_settings_are_the_papers_and_name_every_variant_setting() -> None:
    model, train = study_configs("ml-1m-last15", "reference", 10, 20, seed=1, epochs=7, eval_every=3)
    assert (model.maxlen, model.dropout, model.item_dim, model.user_dim) == (50, 0.5, 50, 0)
    assert (model.num_blocks, model.num_heads) == (2, 1)
    assert (model.block, model.attn_dropout, model.ffn_dropout) == ("post-norm", 0.5, 0.5)
    assert (train.loss, train.p_user, train.p_item, train.lr, train.batch_size) == ("bce", 0.0, 0.0, 1e-3, 128)
    assert (train.seed, train.epochs, train.eval_every) == (1, 7, 3)
    original, _ = study_configs("ml-1m", "original", 10, 20, seed=0, epochs=1, eval_every=1)
    assert (original.maxlen, original.dropout) == (200, 0.2)
    assert (original.block, original.attn_dropout, original.ffn_dropout) == ("sasrec", 0.0, 0.0)
    assert set(VARIANTS) == {"original", "attn-dropout", "ffn-dropout", "post-norm", "pre-norm", "reference"}
    with pytest.raises(ConfigError, match="unknown variant"):
        study_configs("ml-100k", "nope", 10, 20, seed=0, epochs=1, eval_every=1)


def test_cli_default_variant_is_what_the_command_line_trains(monkeypatch: pytest.MonkeyPatch) -> None:
    """`cli-default` is `python -m helpers.train --model sse-sasrec --maxlen 50 --dropout 0.5` on that data:
    the current defaults (attention dropout at the dropout rate, item SSE), not the paper's settings."""
    model, config = study_configs("ml-100k", CLI_DEFAULT, 10, 20, seed=1, epochs=7, eval_every=3)
    argv = ["--dataset", "x", "--model", "sse-sasrec", "--maxlen", "50", "--dropout", "0.5", "--seed", "1",
            "--epochs", "7", "--eval-every", "3"]
    assert cli_configs(monkeypatch, argv, n_users=10, n_items=20) == (model, config)
    assert (model.maxlen, model.dropout, model.attn_dropout, model.user_dim) == (50, 0.5, 0.5, 0)
    assert (config.p_item, config.p_user) == (0.1, 0.0)


def _row(variant: str, seed: int, ndcg: float) -> dict:
    return {"dataset": "d", "variant": variant, "seed": seed, "train.epochs": 5, "best_epoch": 3 + seed,
            "valid_ndcg@10": ndcg, "test_ndcg@10": ndcg, "test_hr@10": 2 * ndcg, "train_seconds": 10.0}


def test_results_rows_replace_reruns_and_average_over_seeds(tmp_path: Path) -> None:
    csv = tmp_path / "r.csv"
    append_row(csv, _row("original", 0, 0.1))
    append_row(csv, _row("original", 0, 0.2))  # a rerun replaces its row
    append_row(csv, _row("original", 1, 0.4))
    frame = append_row(csv, _row("reference", 0, 0.5))
    assert len(frame) == 3 and len(pd.read_csv(csv)) == 3
    table = summary_table(frame)
    assert table["variant"].tolist() == ["original", "reference"]  # in the order of VARIANTS
    first = table.iloc[0]
    assert first["test_ndcg@10"] == pytest.approx(0.3) and first["seeds"] == 2 and first["best_epochs"] == "3/4"
    assert "| d | 5 | original | 2 | 0.3000 |" in markdown(table)


@pytest.mark.parametrize("variant", ["reference"])
def test_resumed_run_with_the_new_dropouts_is_identical(ml1m_slice: data.SequenceData, tmp_path: Path,
                                                        variant: str) -> None:
    """Stopping after epoch 2 and resuming gives exactly the uninterrupted 3-epoch run (CPU)."""
    split = data.leave_one_out(ml1m_slice)
    model_cfg = SSEPTConfig(n_users=ml1m_slice.n_users, n_items=ml1m_slice.n_items, item_dim=16, user_dim=0,
                            maxlen=20, num_heads=1, dropout=0.5, attn_dropout=0.5, ffn_dropout=0.5,
                            block="post-norm")

    def train(epochs: int, out: Path):
        config = TrainConfig(epochs=epochs, eval_every=3, batch_size=64, p_user=0.0, p_item=0.0, seed=3)
        return fit(split, model_cfg, config, out, resume=True, device="cpu", progress=False, log=lambda _: None)

    whole = train(3, tmp_path / "whole")
    train(2, tmp_path / "cut")
    resumed = train(3, tmp_path / "cut")
    assert resumed.history["loss"].tolist() == whole.history["loss"].tolist()
    for key, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    assert resumed.best == whole.best


def test_timed_fused_attention_dropout_is_the_models() -> None:
    """The fused doubled-keys way that the timing compares computes what `AttentionDropout` does."""
    from helpers.layers import AttentionDropout
    from helpers.studies.short_histories import _fused_doubled_keys_attention_dropout

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 1, 6, 4) for _ in range(3))
    idx = torch.arange(6)
    allowed = (idx[None, :] <= idx[:, None]).expand(2, 1, 6, 6)
    model_way = AttentionDropout(0.5, np.random.default_rng(1)).train()(q, k, v, allowed)
    fused_way = _fused_doubled_keys_attention_dropout(AttentionDropout(0.5, np.random.default_rng(1)).train(),
                                                      q, k, v, allowed)
    scale = float(model_way.abs().max())
    torch.testing.assert_close(fused_way, model_way, rtol=1e-5, atol=1e-5 * scale)
