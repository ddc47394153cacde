"""The model: causality, padding, SASRec mode, block forms, dropouts, predict, checkpoints, config errors.

Float comparisons use tolerances scaled to the compared tensor's largest entry (`_close`),
so they hold with any CPU kernel (MKL's AVX2/AVX-512, ATen's vector width) and thread count.
"""

from __future__ import annotations

import pickle
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.checkpoint import read_checkpoint, save_checkpoint
from helpers.errors import CheckpointError, ConfigError
from helpers.layers import AttentionDropout
from helpers.model import SSEPT, load_checkpoint
from helpers.settings import LEGACY_MODEL_SETTINGS, SSEPTConfig

#: Relative tolerance for two float32 computations of the same quantity (rounding ~1e-7,
#: times a margin for sums taken in another order by another kernel or thread count).
REL = 1e-5

#: Every block form, and the reference-like combination (post-norm with both dropouts).
FORMS = [
    pytest.param({"block": "sasrec"}, id="sasrec"),
    pytest.param({"block": "post-norm"}, id="post-norm"),
    pytest.param({"block": "pre-norm"}, id="pre-norm"),
    pytest.param({"block": "post-norm", "attn_dropout": 0.5, "ffn_dropout": 0.5}, id="reference"),
    pytest.param({"block": "pre-norm", "attn_dropout": 0.3, "ffn_dropout": 0.3}, id="pre-norm-dropouts"),
]


def _close(actual: torch.Tensor, expected: torch.Tensor, rel: float = REL) -> None:
    """Equal up to `rel` of the largest |entry| of `expected` (and `rel` of each entry); infs must match."""
    finite = expected.detach()[torch.isfinite(expected)]
    scale = float(finite.abs().max()) if finite.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * max(scale, 1e-12))


def _differs(a: torch.Tensor, b: torch.Tensor, share: float = 1e-3) -> bool:
    """Do `a` and `b` differ by more than `share` of their largest finite entry (far above rounding)."""
    finite = torch.isfinite(b)
    a, b = a.detach()[finite], b.detach()[finite]
    return float((a - b).abs().max()) > share * float(b.abs().max())


def _model(**kw) -> SSEPT:
    torch.manual_seed(0)
    base = {"n_users": 7, "n_items": 20, "item_dim": 8, "user_dim": 4, "maxlen": 6, "num_blocks": 2, "num_heads": 2}
    return SSEPT(SSEPTConfig(**{**base, **kw})).eval()


@pytest.mark.parametrize("form", FORMS)
def test_output_at_t_ignores_later_items(form: dict) -> None:
    model = _model(**form)
    users = torch.tensor([1, 2])
    seqs = torch.tensor([[0, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6]])
    changed = seqs.clone()
    changed[:, 4:] = torch.tensor([[11, 12], [13, 14]])
    a, b = model(users, seqs), model(users, changed)
    _close(b[:, :4], a[:, :4])
    assert _differs(a[:, 4:], b[:, 4:])


@pytest.mark.parametrize("form", FORMS)
def test_padding_has_no_effect(form: dict) -> None:
    model = _model(**form)
    users = torch.tensor([3])
    short = torch.tensor([[5, 6, 7]])
    padded = torch.tensor([[0, 0, 0, 5, 6, 7]])
    # Trimmed and padded windows give the same hidden states at the real positions...
    _close(model(users, padded)[:, 3:], model(users, short))
    # ...and the same scores for every item.
    _close(model.predict(users, padded, None), model.predict(users, short, None))


@pytest.mark.parametrize("form", FORMS)
def test_last_only_matches_full_forward_in_every_form(form: dict) -> None:
    model = _model(**form)
    users, seqs = torch.tensor([1, 4]), torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])
    _close(model(users, seqs, last_only=True), model(users, seqs)[:, -1:])


def test_block_forms_compute_different_functions() -> None:
    users, seqs = torch.tensor([1]), torch.tensor([[1, 2, 3, 4]])
    outs = {f: _model(block=f)(users, seqs) for f in ("sasrec", "post-norm", "pre-norm")}
    assert _differs(outs["post-norm"], outs["sasrec"]) and _differs(outs["pre-norm"], outs["sasrec"])
    assert _differs(outs["pre-norm"], outs["post-norm"])


@pytest.mark.parametrize("which", ["attn_dropout", "ffn_dropout"])
def test_new_dropouts_drop_in_training_only(which: str) -> None:
    users, seqs = torch.tensor([1, 2]), torch.tensor([[0, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6]])
    plain = _model(dropout=0.0)
    model = _model(dropout=0.0, **{which: 0.5})
    # Evaluation: the dropout is off, so the output is the model's without that dropout.
    _close(model(users, seqs), plain(users, seqs))
    assert torch.equal(model(users, seqs), model(users, seqs))
    # Training: each call draws new masks, and none of them equals the undropped output.
    model.train()
    first, second = model(users, seqs), model(users, seqs)
    assert _differs(first, second) and _differs(first, plain(users, seqs))


def test_attention_dropout_is_dropout_of_the_weights() -> None:
    """Training output is (mask * P / (1 - p)) @ v with the generator's masks; padded keys stay hidden."""
    torch.manual_seed(0)
    b, h, length, d = 3, 2, 7, 4
    q, k, v = (torch.randn(b, h, length, d, requires_grad=True) for _ in range(3))
    idx = torch.arange(length)
    allowed = (idx[None, :] <= idx[:, None]).expand(b, 1, length, length).clone()
    allowed[0, :, :, :2] = False  # two padded keys for the first sequence...
    allowed[0, :, idx, idx] = True  # ...whose own rows keep the diagonal open
    layer = AttentionDropout(0.4, np.random.default_rng(5)).train()
    keep = torch.from_numpy(np.random.default_rng(5).integers(0, 65536, size=(b, h, length, length),
                                                               dtype=np.uint16) >= layer.threshold)
    fused = layer(q, k, v, allowed)
    weights = (q @ k.transpose(-1, -2) / d**0.5).masked_fill(~allowed, float("-inf")).softmax(-1)
    by_hand = (weights * keep * (65536 / (65536 - layer.threshold))) @ v
    _close(fused, by_hand)
    grads_fused = torch.autograd.grad(fused.square().sum(), (q, k, v))
    grads_hand = torch.autograd.grad(by_hand.square().sum(), (q, k, v))
    for got, want in zip(grads_fused, grads_hand):
        _close(got, want, rel=1e-4)
    assert _differs(fused, torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed))


def test_old_config_loads_as_the_original_form(tmp_path: Path) -> None:
    """A config stored before the new settings existed means the original form, whatever the defaults."""
    model = _model(dropout=0.3)
    old = {k: v for k, v in model.config.__dict__.items() if k not in LEGACY_MODEL_SETTINGS}
    config = SSEPTConfig.from_dict(old)
    assert {k: getattr(config, k) for k in LEGACY_MODEL_SETTINGS} == {
        "attn_dropout": 0.0, "ffn_dropout": 0.0, "block": "sasrec", "copy_slots": 0}
    save_checkpoint(tmp_path / "old.pt", {"config": old, "model": model.state_dict(), "epoch": 1, "history": []})
    loaded, _ = load_checkpoint(tmp_path / "old.pt")
    assert loaded.config == config
    users, seqs = torch.tensor([1, 6]), torch.tensor([[0, 2, 3], [7, 8, 9]])
    assert torch.equal(loaded.predict(users, seqs, None), model.predict(users, seqs, None))


def test_attention_dropout_defaults_to_the_dropout_rate() -> None:
    """The default (chosen in docs/short_histories.md) follows `dropout`, and is stored resolved."""
    assert _model(dropout=0.5).config.attn_dropout == 0.5
    assert _model(dropout=0.5, attn_dropout=0.0).config.attn_dropout == 0.0
    assert asdict(_model(dropout=0.3).config)["attn_dropout"] == 0.3
    assert (SSEPTConfig.block, SSEPTConfig.ffn_dropout) == ("sasrec", 0.0)


def test_new_settings_roundtrip_through_checkpoint(tmp_path: Path) -> None:
    model = _model(block="pre-norm", attn_dropout=0.25, ffn_dropout=0.125)
    _save(model, tmp_path / "m.pt")
    loaded, ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ckpt["config"]["block"] == "pre-norm" and loaded.config == model.config
    users, seqs = torch.tensor([2]), torch.tensor([[4, 5, 6]])
    assert torch.equal(loaded.predict(users, seqs, None), model.predict(users, seqs, None))


def test_padding_rows_are_zero_before_final_norm() -> None:
    model = _model()
    seqs = torch.tensor([[0, 0, 3, 4, 5, 6]])
    captured = {}
    model.final_norm.register_forward_hook(lambda m, i, o: captured.setdefault("x", i[0]))
    model(torch.tensor([1]), seqs)
    assert torch.equal(captured["x"][0, :2], torch.zeros(2, model.config.dim))


def test_attention_maps_are_causal_distributions() -> None:
    model = _model()
    maps = model.attention_maps(torch.tensor([1]), torch.tensor([[0, 0, 3, 4, 5, 6]]))
    assert len(maps) == 2 and maps[0].shape == (1, 2, 6, 6)
    w = maps[1][0, 0]
    _close(w.sum(-1), torch.ones(6))
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
    assert _differs(one, five)


def test_predict_candidates_match_full_scores() -> None:
    model = _model()
    users, seqs = torch.tensor([1, 2]), torch.tensor([[1, 2, 3], [4, 5, 6]])
    full = model.predict(users, seqs, None)
    assert full.shape == (2, 21) and torch.isinf(full[:, 0]).all()
    cand = torch.tensor([[3, 9, 1], [20, 2, 7]])
    _close(model.predict(users, seqs, cand), full.gather(1, cand))


def test_score_formula_by_hand() -> None:
    """score = h . concat(item_emb[j], user_emb[u] * sqrt(d_u))."""
    model = _model()
    users, seqs = torch.tensor([2]), torch.tensor([[4, 5]])
    h = model(users, seqs)[0, -1]
    item = model.item_emb.weight[9]
    user = model.user_emb.weight[2] * 2.0  # sqrt(4)
    expected = h @ torch.cat([item, user])
    # The dot product's own terms set the scale of its rounding.
    scale = float((h * torch.cat([item, user])).detach().abs().sum())
    got = model.predict(users, seqs, torch.tensor([[9]]))[0, 0]
    assert got.item() == pytest.approx(expected.item(), rel=REL, abs=REL * scale)


def test_padding_row_is_zero() -> None:
    assert torch.equal(_model().item_emb.weight[0], torch.zeros(8))


@pytest.mark.parametrize(
    ("kw", "needle"),
    [({"maxlen": 0}, "maxlen must be at least 1"), ({"item_dim": 0}, "item_dim must be at least 1"),
     ({"user_dim": -1}, "user_dim must be 0"), ({"num_heads": 5}, "must divide the width"),
     ({"dropout": 1.0}, "dropout must be in"), ({"attn_dropout": 1.0}, "attn_dropout must be in"),
     ({"attn_dropout": -0.5}, "attn_dropout must be in"),
     ({"ffn_dropout": -0.1}, "ffn_dropout must be in"), ({"block": "sandwich"}, "block must be one of")],
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
    from helpers.layers import Dropout

    layer = Dropout(0.2, np.random.default_rng(0))
    x = torch.ones(200, 500)
    y = layer(x)
    assert (y == 0).float().mean().item() == pytest.approx(0.2, abs=0.005)
    _close(y[y > 0], torch.full_like(y[y > 0], 65536 / (65536 - 13107)))
    assert torch.equal(layer.eval()(x), x)
