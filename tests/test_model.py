"""The model: causality, padding, SASRec mode, predict, checkpoints and config errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.checkpoint import read_checkpoint, save_checkpoint
from helpers.errors import CheckpointError, ConfigError
from helpers.model import SSEPT, SSEPTConfig, load_checkpoint


def _model(**kw) -> SSEPT:
    torch.manual_seed(0)
    base = {"n_users": 7, "n_items": 20, "item_dim": 8, "user_dim": 4, "maxlen": 6, "num_blocks": 2, "num_heads": 2}
    return SSEPT(SSEPTConfig(**{**base, **kw})).eval()


def test_output_at_t_ignores_later_items() -> None:
    model = _model()
    users = torch.tensor([1, 2])
    seqs = torch.tensor([[0, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6]])
    changed = seqs.clone()
    changed[:, 4:] = torch.tensor([[11, 12], [13, 14]])
    a, b = model(users, seqs), model(users, changed)
    assert torch.allclose(a[:, :4], b[:, :4], atol=1e-6)
    assert not torch.allclose(a[:, 4:], b[:, 4:], atol=1e-3)


def test_padding_has_no_effect() -> None:
    model = _model()
    users = torch.tensor([3])
    short = torch.tensor([[5, 6, 7]])
    padded = torch.tensor([[0, 0, 0, 5, 6, 7]])
    # Trimmed and padded windows give the same hidden states at the real positions...
    assert torch.allclose(model(users, short), model(users, padded)[:, 3:], atol=1e-6)
    # ...and the same scores for every item.
    assert torch.allclose(model.predict(users, short, None), model.predict(users, padded, None), atol=1e-5)


def test_padding_rows_are_zero_before_final_norm() -> None:
    model = _model()
    seqs = torch.tensor([[0, 0, 3, 4, 5, 6]])
    captured = {}
    model.final_norm.register_forward_hook(lambda m, i, o: captured.setdefault("x", i[0]))
    model(torch.tensor([1]), seqs)
    assert torch.equal(captured["x"][0, :2], torch.zeros(2, model.config.dim))


def test_last_only_matches_full_forward() -> None:
    model = _model()
    users, seqs = torch.tensor([1, 4]), torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])
    assert torch.allclose(model(users, seqs)[:, -1:], model(users, seqs, last_only=True), atol=1e-6)


def test_attention_maps_are_causal_distributions() -> None:
    model = _model()
    maps = model.attention_maps(torch.tensor([1]), torch.tensor([[0, 0, 3, 4, 5, 6]]))
    assert len(maps) == 2 and maps[0].shape == (1, 2, 6, 6)
    w = maps[1][0, 0]
    assert torch.allclose(w.sum(-1), torch.ones(6))
    assert torch.equal(w.triu(1), torch.zeros(6, 6))  # nothing attends to the future
    assert torch.equal(w[2:, :2], torch.zeros(4, 2))  # real positions never attend to padding


def test_sasrec_mode_has_no_user_part() -> None:
    model = _model(user_dim=0, num_heads=1)
    assert model.user_emb is None and model.config.dim == 8
    seqs = torch.tensor([[1, 2, 3]])
    # Without a user part, the user id cannot matter.
    assert torch.equal(model.predict(torch.tensor([1]), seqs, None), model.predict(torch.tensor([5]), seqs, None))


def test_user_matters_in_ssept() -> None:
    model = _model()
    seqs = torch.tensor([[1, 2, 3]])
    one, five = model.predict(torch.tensor([1]), seqs, None), model.predict(torch.tensor([5]), seqs, None)
    assert not torch.allclose(one, five)


def test_predict_candidates_match_full_scores() -> None:
    model = _model()
    users, seqs = torch.tensor([1, 2]), torch.tensor([[1, 2, 3], [4, 5, 6]])
    full = model.predict(users, seqs, None)
    assert full.shape == (2, 21) and torch.isinf(full[:, 0]).all()
    cand = torch.tensor([[3, 9, 1], [20, 2, 7]])
    assert torch.allclose(model.predict(users, seqs, cand), full.gather(1, cand), atol=1e-5)


def test_score_formula_by_hand() -> None:
    """score = h . concat(item_emb[j], user_emb[u] * sqrt(d_u))."""
    model = _model()
    users, seqs = torch.tensor([2]), torch.tensor([[4, 5]])
    h = model(users, seqs)[0, -1]
    item = model.item_emb.weight[9]
    user = model.user_emb.weight[2] * 2.0  # sqrt(4)
    expected = h @ torch.cat([item, user])
    assert model.predict(users, seqs, torch.tensor([[9]]))[0, 0] == pytest.approx(expected.item(), abs=1e-5)


def test_padding_row_is_zero() -> None:
    assert torch.equal(_model().item_emb.weight[0], torch.zeros(8))


@pytest.mark.parametrize(
    ("kw", "needle"),
    [({"maxlen": 0}, "maxlen must be at least 1"), ({"item_dim": 0}, "item_dim must be at least 1"),
     ({"user_dim": -1}, "user_dim must be 0"), ({"num_heads": 5}, "must divide the width"),
     ({"dropout": 1.0}, "dropout must be in")],
)
def test_bad_config(kw: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        _model(**kw)


def _save(model: SSEPT, path: Path) -> None:
    save_checkpoint(path, {"config": model.config.__dict__, "model": model.state_dict(), "epoch": 1, "history": []})


def test_checkpoint_roundtrip_identical_scores(tmp_path: Path) -> None:
    model = _model()
    _save(model, tmp_path / "m.pt")
    loaded, ckpt = load_checkpoint(tmp_path / "m.pt")
    users, seqs = torch.tensor([1, 6]), torch.tensor([[1, 2, 3], [7, 8, 9]])
    assert torch.equal(model.predict(users, seqs, None), loaded.predict(users, seqs, None))
    assert ckpt["epoch"] == 1


def test_checkpoint_mismatching_config(tmp_path: Path) -> None:
    model = _model()
    _save(model, tmp_path / "m.pt")
    ckpt = read_checkpoint(tmp_path / "m.pt")
    ckpt["config"]["item_dim"] = 16
    save_checkpoint(tmp_path / "bad.pt", ckpt)
    with pytest.raises(CheckpointError, match="weights do not fit the model config"):
        load_checkpoint(tmp_path / "bad.pt")


class Evil:
    """An object whose unpickling would run code."""

    def __reduce__(self):
        return (print, ("owned",))


def test_checkpoint_with_pickled_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "ssept-checkpoint/1", "config": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        read_checkpoint(path)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(junk)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not an SSE-PT checkpoint"):
        read_checkpoint(plain)
    pickled = tmp_path / "pickled.pt"
    pickled.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError):
        read_checkpoint(pickled)


def test_truncated_checkpoint(tmp_path: Path) -> None:
    model = _model()
    _save(model, tmp_path / "m.pt")
    raw = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(tmp_path / "cut.pt")


def test_dropout_rate_scale_and_eval_identity() -> None:
    from helpers.model import Dropout

    layer = Dropout(0.2, np.random.default_rng(0))
    x = torch.ones(200, 500)
    y = layer(x)
    assert (y == 0).float().mean().item() == pytest.approx(0.2, abs=0.005)
    assert torch.allclose(y[y > 0], torch.full_like(y[y > 0], 65536 / (65536 - 13107)))
    assert torch.equal(layer.eval()(x), x)
