"""The copy bonus (`copy_slots`, our addition, docs/copy_bonus.md): exact by hand in every scoring path,
causal, blind to padding, off by default, trained under a frozen encoder, and invisible to old
checkpoints, run folders and study rows."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from helpers import data
from helpers.checkpoint import read_checkpoint, save_checkpoint
from helpers.errors import ConfigError
from helpers.losses import loss_sum
from helpers.model import SSEPT, load_checkpoint, transfer_encoder
from helpers.runs import RunFolder
from helpers.settings import SSEPTConfig, TrainConfig
from helpers.studies.transfer import (
    COPY_SETUPS,
    STUDY_COPY_LR_SCALE,
    STUDY_COPY_SLOTS,
    Setup,
    StudyTable,
    run_settings,
    settings_key,
)
from helpers.train import fit, make_optimizer
from helpers.train import main as train_main
from tests.test_train import SMALL, _synthetic
from tests.tolerance import assert_close_scaled

ROOT = Path(__file__).resolve().parents[1]
R = 2
#: One value per slot, none zero and all different, so a wrong slot shows.
BONUS = [1.5, -0.7, 0.3]
USERS = torch.tensor([1, 2])
#: Row 0: item 3 twice (its later position counts), padding first. Row 1: item 4 twice in a row.
SEQS = torch.tensor([[0, 3, 5, 3, 9, 7], [4, 4, 8, 2, 6, 11]])


def _pair(**kw) -> tuple[SSEPT, SSEPT]:
    """A model with the copy bonus set to BONUS, and the same weights without a copy bonus."""
    base_cfg = {"n_users": 7, "n_items": 20, "item_dim": 8, "user_dim": 4, "maxlen": 6, "num_blocks": 2,
                "num_heads": 2, **kw}
    torch.manual_seed(0)
    base = SSEPT(SSEPTConfig(**base_cfg)).eval()
    model = SSEPT(SSEPTConfig(**base_cfg, copy_slots=R)).eval()
    model.load_state_dict({**base.state_dict(), "copy_bonus": torch.tensor(BONUS)})
    return model, base


def _by_hand(seqs: torch.Tensor, n_items: int, t: int) -> torch.Tensor:
    """(B, n_items + 1) bonus at position t: walk back from t, first sighting of an item counts."""
    out = torch.zeros(seqs.shape[0], n_items + 1)
    for b in range(seqs.shape[0]):
        seen = set()
        for s in range(t, -1, -1):
            item = int(seqs[b, s])
            if item and item not in seen:
                seen.add(item)
                out[b, item] = BONUS[min(t - s, R)]
    return out


def test_hand_made_window_gets_the_right_slots() -> None:
    """Spelled out for the last position of row 0: 7 at d=0, 9 at d=1, 3 at d=2 (its later
    position, not d=4), 5 at d=3 beyond R (shares slot R); items absent from the window get nothing."""
    last = _by_hand(SEQS, 20, 5)
    assert [last[0, i].item() for i in (7, 9, 3, 5, 1, 0)] == pytest.approx([1.5, -0.7, 0.3, 0.3, 0.0, 0.0])
    assert [last[1, i].item() for i in (11, 6, 2, 8, 4)] == pytest.approx([1.5, -0.7, 0.3, 0.3, 0.3])


@pytest.mark.parametrize("sasrec", [False, True], ids=["ssept", "sasrec"])
def test_every_scoring_path_adds_the_hand_computed_bonus(sasrec: bool) -> None:
    model, base = _pair(**({"user_dim": 0} if sasrec else {}))
    hidden = model(USERS, SEQS)
    assert torch.equal(hidden, base(USERS, SEQS))  # the bonus touches scores only
    want_all = torch.stack([_by_hand(SEQS, 20, t) for t in range(6)], dim=1) + base.score_all(hidden, USERS)
    got_all = model.score_all(hidden, USERS, SEQS)
    assert torch.isinf(got_all[..., 0]).all()
    window, bonus = model.copy_terms(SEQS)
    assert (bonus[window == 0] == 0).all()  # padding slots never carry a bonus
    assert_close_scaled(got_all[..., 1:], want_all[..., 1:])
    # Gathered rows (the CPU CE path) give the same rows.
    real = SEQS > 0
    rows = real.nonzero(as_tuple=True)[0]
    assert_close_scaled(model.score_all(hidden[real], USERS[rows], SEQS, at=real)[:, 1:], got_all[real][:, 1:])
    # score_items (BCE) at every position, for items in and out of the window.
    items = torch.tensor([[3, 3, 5, 3, 3, 3], [4, 4, 4, 4, 1, 20]])
    assert_close_scaled(model.score_items(hidden, USERS, items, SEQS), want_all.gather(-1, items[..., None])[..., 0])
    # predict: the last position, over all items and over candidates.
    full = model.predict(USERS, SEQS, None)
    assert_close_scaled(full[:, 1:], base.predict(USERS, SEQS, None)[:, 1:] + _by_hand(SEQS, 20, 5)[:, 1:])
    assert_close_scaled(full[:, 1:], got_all[:, -1, 1:])
    cand = torch.tensor([[3, 5, 7, 1], [4, 11, 20, 6]])
    assert_close_scaled(model.predict(USERS, SEQS, cand), full.gather(1, cand))


def test_random_repeat_heavy_windows_match_the_walk_back() -> None:
    """Windows of 4 items with padding (many repeats, runs, items older than R) against `_by_hand`."""
    model, base = _pair()
    gen = torch.Generator().manual_seed(3)
    seqs = torch.randint(1, 5, (16, 6), generator=gen)
    pad = torch.randint(0, 6, (16,), generator=gen)
    seqs[torch.arange(6)[None, :] < pad[:, None]] = 0
    users = torch.randint(1, 8, (16,), generator=gen)
    hidden = model(users, seqs)
    want = torch.stack([_by_hand(seqs, 20, t) for t in range(6)], dim=1) + base.score_all(hidden, users)
    assert_close_scaled(model.score_all(hidden, users, seqs)[..., 1:], want[..., 1:])


def test_windows_of_one_position() -> None:
    """The shortest window (a batch trimmed to one position), real or padding, in every path."""
    model, base = _pair()
    users, seqs = torch.tensor([1, 2]), torch.tensor([[4], [0]])
    want = base.predict(users, seqs, None)
    want[0, 4] += BONUS[0]
    assert_close_scaled(model.predict(users, seqs, None)[:, 1:], want[:, 1:])
    assert_close_scaled(model.predict(users, seqs, torch.tensor([[4, 5], [4, 5]])), want[:, [4, 5]])
    hidden = model(users, seqs)
    assert_close_scaled(model.score_all(hidden, users, seqs)[:, 0, 1:], want[:, 1:])
    assert_close_scaled(model.score_items(hidden, users, torch.tensor([[4], [4]]), seqs)[:, 0], want[:, 4])


def test_missing_window_is_refused() -> None:
    model, _ = _pair()
    hidden = model(USERS, SEQS)
    with pytest.raises(ConfigError, match="copy_slots is 2: scoring needs the input window"):
        model.score_all(hidden, USERS)
    with pytest.raises(ConfigError, match="needs the input window"):
        model.score_items(hidden, USERS, SEQS)


def test_scores_at_t_ignore_later_items() -> None:
    model, _ = _pair()
    changed = SEQS.clone()
    changed[:, 4:] = torch.tensor([[3, 5], [8, 4]])  # later items that are also earlier ones
    a = model.score_all(model(USERS, SEQS), USERS, SEQS)
    b = model.score_all(model(USERS, changed), USERS, changed)
    assert_close_scaled(b[:, :4, 1:], a[:, :4, 1:])
    assert (b[:, 4:, 1:] - a[:, 4:, 1:]).abs().max() > 0.1


def test_left_padding_changes_no_score() -> None:
    model, _ = _pair()
    users, short = torch.tensor([3]), torch.tensor([[5, 6, 5, 7]])
    padded = torch.tensor([[0, 0, 5, 6, 5, 7]])
    assert_close_scaled(model.predict(users, padded, None)[:, 1:], model.predict(users, short, None)[:, 1:])
    full_padded = model.score_all(model(users, padded), users, padded)[:, 2:, 1:]
    assert_close_scaled(full_padded, model.score_all(model(users, short), users, short)[..., 1:])


def test_fresh_model_scores_exactly_as_without_the_bonus() -> None:
    torch.manual_seed(0)
    base = SSEPT(SSEPTConfig(7, 20, item_dim=8, user_dim=4, maxlen=6)).eval()
    torch.manual_seed(0)
    model = SSEPT(SSEPTConfig(7, 20, item_dim=8, user_dim=4, maxlen=6, copy_slots=R)).eval()
    assert torch.equal(model.copy_bonus, torch.zeros(R + 1))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in base.state_dict().items())
    assert torch.equal(model.predict(USERS, SEQS, None), base.predict(USERS, SEQS, None))
    hidden = model(USERS, SEQS)
    assert torch.equal(model.score_all(hidden, USERS, SEQS), base.score_all(hidden, USERS))
    # Off means off: no parameter, and scoring without the window as before.
    assert base.copy_bonus is None and "copy_bonus" not in base.state_dict()


def test_dense_and_gathered_ce_agree_with_the_bonus() -> None:
    model, base = _pair(dropout=0.0)
    seq = torch.tensor([[0, 3, 5, 3, 9], [4, 4, 8, 2, 6]])
    pos = torch.tensor([[0, 5, 3, 9, 7], [4, 8, 2, 6, 4]])
    neg = torch.tensor([[1, 2, 1, 2, 1], [12, 13, 14, 15, 16]])
    losses, grads = {}, {}
    for dense in (False, True):
        model.zero_grad()
        losses[dense] = loss_sum(model, USERS, seq, pos, None, "ce", dense)
        losses[dense].backward()
        grads[dense] = model.copy_bonus.grad.clone()
    assert_close_scaled(losses[True], losses[False])
    assert_close_scaled(grads[True], grads[False])
    assert grads[True].abs().min() > 0  # every slot occurs in this batch, so every slot learns
    # CE and BCE by hand: the base model's scores plus the hand-computed bonus.
    hidden = base(USERS, seq)
    logits = base.score_all(hidden, USERS) + torch.stack([_by_hand(seq, 20, t) for t in range(5)], dim=1)
    real = pos > 0
    by_hand = torch.nn.functional.cross_entropy(logits[real], pos[real], reduction="sum")
    assert_close_scaled(losses[True].detach(), by_hand.detach())
    # Padded targets index a real item here (their terms are masked out), not the -inf padding column.
    pos_l = logits.gather(-1, pos.clamp(min=1)[..., None])[..., 0]
    neg_l = logits.gather(-1, neg[..., None])[..., 0]
    bce = ((torch.nn.functional.softplus(-pos_l) + torch.nn.functional.softplus(neg_l)) * real).sum()
    assert_close_scaled(loss_sum(model, USERS, seq, pos, neg, "bce", False).detach(), bce.detach())


def test_frozen_encoder_still_trains_the_bonus() -> None:
    model, _ = _pair(dropout=0.0)
    assert not any(p is model.copy_bonus for p in model.encoder_parameters())
    encoder = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("blocks.", "pos_emb.", "final"))}
    optimizer = make_optimizer(model, TrainConfig(freeze_encoder=True, loss="ce"))
    before = model.copy_bonus.detach().clone()
    loss_sum(model.train(), USERS, SEQS, torch.tensor([[0, 5, 3, 9, 7, 1], [4, 8, 2, 6, 11, 4]]), None, "ce",
             False).backward()
    optimizer.step()
    assert model.copy_bonus.requires_grad and not torch.equal(model.copy_bonus.detach(), before)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in encoder.items())


def test_copy_bonus_has_its_own_learning_rate() -> None:
    """Adam's first step moves each parameter by lr times its group's factor (the sign of its gradient)."""
    model, _ = _pair(dropout=0.0)
    optimizer = make_optimizer(model, TrainConfig(lr=1e-3, copy_lr_scale=50.0, loss="ce"))
    before = model.copy_bonus.detach().clone()
    loss_sum(model.train(), USERS, SEQS, torch.tensor([[0, 5, 3, 9, 7, 1], [4, 8, 2, 6, 11, 4]]), None, "ce",
             False).backward()
    moved = model.copy_bonus.grad != 0
    optimizer.step()
    step = (model.copy_bonus.detach() - before).abs()
    assert moved.any() and torch.allclose(step[moved], torch.full_like(step[moved], 0.05), rtol=1e-4)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 0.05, 1e-3]  # tables, copy bonus, encoder
    with pytest.raises(ConfigError, match="copy_lr_scale"):
        TrainConfig(copy_lr_scale=0.0)


def test_encoder_transfer_leaves_the_bonus_alone() -> None:
    """Transfer copies the encoder (and, on the same data, the tables), never the source's copy bonus."""
    source, _ = _pair()
    ckpt = {"config": asdict(source.config), "model": source.state_dict()}
    torch.manual_seed(1)
    target = SSEPT(source.config)
    copied = transfer_encoder(target, ckpt, "source", same_data=True)
    assert "copy_bonus" not in copied and torch.equal(target.copy_bonus, torch.zeros(R + 1))


def test_a_checkpoint_without_the_field_loads_as_before(tmp_path: Path) -> None:
    _, base = _pair()
    old = {k: v for k, v in asdict(base.config).items() if k != "copy_slots"}
    save_checkpoint(tmp_path / "old.pt", {"config": old, "model": base.state_dict(), "epoch": 1, "history": []})
    loaded, _ = load_checkpoint(tmp_path / "old.pt")
    assert loaded.config.copy_slots == 0 and loaded.copy_bonus is None
    assert torch.equal(loaded.predict(USERS, SEQS, None), base.predict(USERS, SEQS, None))
    # The committed checkpoints were written before the field existed (tests/test_artifacts.py checks their numbers).
    committed = read_checkpoint(ROOT / "artifacts" / "ml1m_sasrec.pt")
    assert "copy_slots" not in committed["config"]
    assert load_checkpoint(ROOT / "artifacts" / "ml1m_sasrec.pt")[0].copy_bonus is None


def test_a_run_folder_without_the_field_still_resumes(tmp_path: Path) -> None:
    config = SSEPTConfig(7, 20, item_dim=8, user_dim=4, maxlen=6)
    description = {"model": asdict(config), "train": asdict(TrainConfig()), "dataset": "x"}
    old = json.loads(json.dumps(description))
    del old["model"]["copy_slots"]
    (tmp_path / "run.json").write_text(json.dumps(old))
    RunFolder(tmp_path).prepare(description, resume=True, overwrite=False)  # would raise on a difference
    with pytest.raises(ConfigError, match=r"model.copy_slots 0 -> 8"):
        RunFolder(tmp_path).prepare({**description, "model": asdict(replace(config, copy_slots=8))},
                                    resume=True, overwrite=False)


def test_copy_slots_flag_in_the_training_cli(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        train_main(["--help"])
    assert "--copy-slots" in capsys.readouterr().out


def test_study_key_treats_copy_slots_zero_as_absent(tmp_path: Path) -> None:
    split = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "s.txt", users=30)))
    base = SSEPTConfig(1, 1, **SMALL)
    train = TrainConfig(epochs=2)
    settings = run_settings(split, Setup("scratch"), base, train, 1.0, 0, None)[2]
    assert settings["model"]["copy_slots"] == 0 and settings["setup"]["copy_slots"] == 0
    recorded = json.loads(json.dumps(settings))  # as a row written before the fields existed
    del recorded["model"]["copy_slots"], recorded["setup"]["copy_slots"]
    del recorded["setup"]["copy_lr_scale"], recorded["train"]["copy_lr_scale"]
    assert settings_key(recorded) == settings_key(settings)
    table = StudyTable(tmp_path / "study.csv")
    table.add({"setup": "scratch", "fraction": 1.0, "seed": 0, "kind": "model"}, recorded)
    table.frame["settings"] = [json.dumps(recorded)]  # exactly what the old code stored
    assert table.lookup("scratch", 1.0, 0, settings)
    # Another real difference is still refused, and named without a spurious copy_slots.
    with pytest.raises(ConfigError, match=r"under other settings \(train.epochs 2 -> 3\)"):
        table.lookup("scratch", 1.0, 0, run_settings(split, Setup("scratch"), base, replace(train, epochs=3),
                                                     1.0, 0, None)[2])
    # The copy setups carry the study's R into the model config, and so get their own keys.
    copy = run_settings(split, replace(COPY_SETUPS[0], family="ssept"), base, train, 1.0, 0, None)
    assert copy[0].copy_slots == STUDY_COPY_SLOTS == copy[2]["model"]["copy_slots"]
    assert copy[1].copy_lr_scale == STUDY_COPY_LR_SCALE == copy[2]["train"]["copy_lr_scale"]
    assert settings_key(copy[2]) != settings_key({**settings, "setup": copy[2]["setup"]})


def test_a_short_run_with_the_bonus_trains_and_reloads(tmp_path: Path) -> None:
    """fit, evaluation and best.pt with the bonus on (CE, the CPU's gathered path)."""
    split = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "s.txt", users=40)))
    cfg = SSEPTConfig(split.data.n_users, split.data.n_items, **SMALL, copy_slots=3)
    result = fit(split, cfg, TrainConfig(epochs=2, batch_size=16, eval_every=1, eval_negatives=10, loss="ce",
                                         eval_protocol="full-keep"), tmp_path / "run", progress=False)
    assert result.model.copy_bonus.abs().max() > 0
    loaded, _ = load_checkpoint(tmp_path / "run" / "best.pt")
    assert loaded.config.copy_slots == 3
    users, seqs = torch.tensor([1, 2]), torch.tensor([[0, 1, 2, 1], [3, 4, 5, 6]])
    assert torch.equal(loaded.predict(users, seqs, None), result.model.cpu().eval().predict(users, seqs, None))
