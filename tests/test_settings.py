"""The presets are named for what they are, and `--l2-emb` computes what its help says."""

from __future__ import annotations

import pytest
import torch

from helpers import settings
from helpers.losses import l2_penalty
from helpers.model import SSEPT
from helpers.settings import SSEPTConfig
from helpers.train import SASREC_NOTE, main


def test_paper_and_reference_recipes_differ_only_in_the_reference_codes_dropouts() -> None:
    paper = settings.model_config("ssept", 10, 20, "paper")
    reference = settings.model_config("ssept", 10, 20, "reference")
    assert (paper.attn_dropout, paper.ffn_dropout, paper.dropout) == (0.0, 0.0, 0.2)
    assert (reference.attn_dropout, reference.ffn_dropout, reference.dropout) == (0.2, 0.2, 0.2)
    assert settings.train_config("ssept", "paper") == settings.train_config("ssept", "reference")


def test_sasrec_is_the_published_model_and_sse_sasrec_has_item_sse() -> None:
    published = settings.train_config("sasrec", "paper")
    with_sse = settings.train_config("sse-sasrec", "paper")
    assert (published.p_user, published.p_item) == (0.0, 0.0)
    assert (with_sse.p_user, with_sse.p_item) == (0.0, 0.1)
    for family in ("sasrec", "sse-sasrec"):
        model = settings.model_config(family, 10, 20, "paper")
        assert model.user_dim == 0 and settings.family_of(model) == "sasrec"


def test_the_old_recipe_name_still_works_and_names_the_new_one() -> None:
    with pytest.warns(FutureWarning, match="'faithful' is now called 'paper'"):
        old = settings.model_config("ssept", 10, 20, "faithful")
    assert old == settings.model_config("ssept", 10, 20, "paper")
    with pytest.raises(settings.ConfigError, match="unknown recipe 'nope'"):
        settings.train_config("ssept", "nope")


def test_the_command_line_says_what_renamed_names_mean(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    data = tmp_path / "tiny.txt"
    data.write_text("".join(f"{u} {u + i}\n" for u in range(1, 5) for i in range(5)))  # 8 items, 5 a user
    argv = ["--dataset", str(data), "--model", "sasrec", "--recipe", "faithful", "--epochs", "1", "--maxlen", "5",
            "--item-dim", "4", "--batch-size", "2", "--eval-negatives", "2", "--quiet", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "--recipe faithful is now --recipe paper" in err and SASREC_NOTE in err


def test_l2_penalty_is_l2_emb_times_the_squared_item_and_user_tables() -> None:
    model = SSEPT(SSEPTConfig(n_users=2, n_items=3, item_dim=2, user_dim=2, maxlen=4, num_heads=1))
    with torch.no_grad():
        model.item_emb.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 2.0], [0.0, -1.0], [3.0, 0.0]]))  # 1+4+1+9
        model.user_emb.weight.copy_(torch.tensor([[0.0, 0.0], [0.5, 0.5], [-2.0, 0.0]]))  # 0.25+0.25+4
        model.pos_emb.weight.fill_(7.0)  # the position table is not penalised
    assert l2_penalty(model, 0.1).item() == pytest.approx(0.1 * (15.0 + 4.5))
    sasrec = SSEPT(SSEPTConfig(n_users=2, n_items=3, item_dim=2, user_dim=0, maxlen=4, num_heads=1))
    with torch.no_grad():
        sasrec.item_emb.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 2.0], [0.0, -1.0], [3.0, 0.0]]))
    assert l2_penalty(sasrec, 2.0).item() == pytest.approx(2.0 * 15.0)
