"""Training: learning on real data, transfer, run folders, determinism, kill-and-resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import data
from helpers import train as train_module
from helpers.checkpoint import read_checkpoint
from helpers.errors import CheckpointError, ConfigError, NonFiniteError
from helpers.evaluate import Evaluator
from helpers.losses import compute_loss, loss_sum, make_loss_fn
from helpers.model import SSEPT, load_checkpoint, transfer_encoder
from helpers.notebook.own_data import training_plan
from helpers.runs import RunFolder
from helpers.sampler import TrainSampler
from helpers.settings import SSEPTConfig, TrainConfig
from helpers.train import fit, make_optimizer, pieces_per_batch, train_epoch
from helpers.train import main as train_main
from helpers.utils import relative
from tests.tolerance import assert_close_scaled


def TC(**kw) -> TrainConfig:  # noqa: N802 (reads like the class it builds)
    """Training settings for the tiny synthetic data (40 items: 10 sampled negatives)."""
    return TrainConfig(**{"batch_size": 16, "eval_negatives": 10, **kw})

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"item_dim": 16, "user_dim": 8, "maxlen": 30, "num_blocks": 1}


def _synthetic(path: Path, users: int = 120, items: int = 40, seed: int = 0, lengths: tuple[int, int] = (4, 25),
               steps: tuple[int, int] = (1, 3)) -> Path:
    """Users walk through items in steps drawn from `range(*steps)` minus one (by default 0 or 1: a learnable
    sequential pattern; `steps=(0, 3)` adds repeats), with `range(*lengths)` rows each."""
    rng = np.random.default_rng(seed)
    lines = []
    for u in range(1, users + 1):
        item = int(rng.integers(1, items + 1))
        for _ in range(int(rng.integers(*lengths))):
            lines.append(f"{u} {item}")
            item = (item + int(rng.integers(*steps)) - 1) % items + 1
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(split: data.Split, **kw) -> SSEPTConfig:
    return SSEPTConfig(n_users=split.data.n_users, n_items=split.data.n_items, **{**SMALL, **kw})


def test_two_epochs_on_ml1m_slice_learn(ml1m_slice: data.SequenceData) -> None:
    split = data.leave_one_out(ml1m_slice)
    cfg = SSEPTConfig(ml1m_slice.n_users, ml1m_slice.n_items, item_dim=32, user_dim=16, maxlen=100)
    result = fit(split, cfg, TrainConfig(epochs=2, batch_size=32, eval_every=1, seed=1), progress=False)
    hist = result.history
    assert hist["loss"].iloc[1] < hist["loss"].iloc[0]
    # A random scorer gets HR@10 = 10/101 and NDCG@10 ~ 0.043 in expectation.
    assert result.best["valid_hr@10"] > 0.2
    assert result.best["valid_ndcg@10"] > 0.08
    assert set(hist.columns) >= {"epoch", "loss", "seconds", "valid_ndcg@10", "test_hr@10", "elapsed"}


def test_same_seed_same_weights_and_metrics(tmp_path: Path) -> None:
    split = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "s.txt")))
    tc = TC(epochs=2, eval_every=1, seed=4, p_sub=0.5)
    a = fit(split, _config(split), tc, progress=False)
    b = fit(split, _config(split), tc, progress=False)
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), name
    assert a.history.drop(columns=["seconds", "elapsed", "eval_seconds"]).equals(
        b.history.drop(columns=["seconds", "elapsed", "eval_seconds"]))


def test_ce_loss_trains(tmp_path: Path) -> None:
    split = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "s.txt")))
    result = fit(split, _config(split), TC(epochs=3, eval_every=1, loss="ce"),
                 progress=False)
    assert result.history["loss"].iloc[-1] < result.history["loss"].iloc[0]


def test_run_folder_files_and_best(tmp_path: Path) -> None:
    split = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "s.txt")))
    out = tmp_path / "run"
    result = fit(split, _config(split), TC(epochs=4, eval_every=2), out, progress=False)
    assert {p.name for p in out.iterdir()} >= {"run.json", "last.pt", "prev.pt", "best.pt", "history.csv"}
    best = read_checkpoint(out / "best.pt")
    assert best["epoch"] == result.best["epoch"]
    # The returned model is the best one, and its validation score is the recorded one.
    ev = Evaluator(split, "valid", "sampled", seed=0, n_negatives=10)
    assert ev(result.model)["ndcg@10"] == pytest.approx(result.best["valid_ndcg@10"], abs=1e-9)
    model, _ = load_checkpoint(out / "best.pt")
    assert ev(model)["ndcg@10"] == pytest.approx(result.best["valid_ndcg@10"], abs=1e-9)


def test_out_folder_refuses_other_run(tmp_path: Path) -> None:
    split = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "s.txt")))
    out = tmp_path / "run"
    fit(split, _config(split), TC(epochs=1), out, progress=False)
    with pytest.raises(ConfigError, match=r"already holds a different run \(differs in: train.lr 0.001 -> 0.01\)"):
        fit(split, _config(split), TC(epochs=1, lr=0.01), out, progress=False)
    with pytest.raises(ConfigError, match="already holds this run; pass resume"):
        fit(split, _config(split), TC(epochs=1), out, progress=False)
    fit(split, _config(split), TC(epochs=1, lr=0.01), out, overwrite=True, progress=False)


def test_a_run_resumes_with_another_epoch_cap_or_compile_mode_only(tmp_path: Path) -> None:
    split = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "s.txt")))
    out = RunFolder(tmp_path / "run")
    fit(split, _config(split), TC(epochs=1), out.path, progress=False)
    stored = json.loads(out.run.read_text())
    for key, value in (("epochs", 5), ("compile", "reduce-overhead")):
        out.check(stored | {"train": stored["train"] | {key: value}}, resume=True, overwrite=False)
    with pytest.raises(ConfigError, match=r"differs in: train.bucket 0 -> 8"):
        out.check(stored | {"train": stored["train"] | {"bucket": 8}}, resume=True, overwrite=False)


def test_a_finished_run_says_it_is_reloaded_not_resumed(tmp_path: Path) -> None:
    split = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "s.txt")))
    fit(split, _config(split), TC(epochs=2), tmp_path / "run", progress=False)
    said: list[str] = []
    again = fit(split, _config(split), TC(epochs=2), tmp_path / "run", resume=True, progress=False, log=said.append)
    assert said[0].endswith(f"run has trained all 2 epochs: reloading it (best epoch {again.best['epoch']})")
    fit(split, _config(split), TC(epochs=3), tmp_path / "run", resume=True, progress=False, log=said.append)
    assert said[-1].startswith("resuming ") and said[-1].endswith("run from epoch 2")


def test_a_run_stopped_by_patience_says_it_is_reloaded_and_the_plan_agrees(tmp_path: Path) -> None:
    """A run that patience ended, before its epoch cap, is reloaded, not "resumed", and the notebook's plan,
    which reads its history.csv, calls it finished by the same rule; a larger patience resumes it."""
    split = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "s.txt", users=48)))
    config = TC(epochs=60, eval_every=1, patience=2, lr=0.05)
    first = fit(split, _config(split), config, tmp_path / "run", progress=False)
    assert first.stop_reason == "patience" and len(first.history) < 60
    said: list[str] = []
    again = fit(split, _config(split), config, tmp_path / "run", resume=True, progress=False, log=said.append)
    assert said == [f"{relative(tmp_path / 'run')} was stopped by patience after {len(first.history)} epochs: "
                    f"reloading it (best epoch {first.best['epoch']})"]
    assert again.stop_reason == "patience" and again.best == first.best
    assert training_plan({"run": tmp_path / "run"}, config).startswith("all 1 runs are finished")
    longer = TC(epochs=60, eval_every=1, patience=50, lr=0.05)
    assert f"run (resumes after epoch {len(first.history)})" in training_plan({"run": tmp_path / "run"}, longer)


@pytest.mark.parametrize("loss", ["bce", "ce", "bce+ce"])
def test_chunks_give_the_whole_batch_gradient(ml1m_slice: data.SequenceData, loss: str) -> None:
    split = data.leave_one_out(ml1m_slice)
    cfg = SSEPTConfig(ml1m_slice.n_users, ml1m_slice.n_items, item_dim=16, user_dim=8, maxlen=100, dropout=0.0)
    batch = next(TrainSampler(split, 48, 100, np.random.default_rng(0), 0.5, 0.1).epoch())
    tc = TrainConfig(loss=loss, l2_emb=1e-3)
    torch.manual_seed(0)
    model = SSEPT(cfg)
    results = []
    for parts in (1, 4):
        model.zero_grad()
        pieces = batch.split(parts)
        assert len(pieces) == parts
        total = 0.0
        for i, piece in enumerate(pieces):
            piece_loss = compute_loss(model, piece, torch.device("cpu"), tc, positions=batch.n_positions,
                                      penalty=i == 0)
            piece_loss.backward()
            total += piece_loss.item()
        results.append((total, {k: p.grad.clone() for k, p in model.named_parameters()}))
    (whole, g_whole), (chunked, g_chunked) = results
    assert chunked == pytest.approx(whole, rel=1e-6)
    for k, g in g_whole.items():
        assert_close_scaled(g_chunked[k], g, msg=k)


def test_loss_sums_real_positions_by_hand() -> None:
    """BCE and CE on a 2 x 3 batch with one padded position, against per-position formulas."""
    torch.manual_seed(0)
    model = SSEPT(SSEPTConfig(n_users=3, n_items=6, item_dim=4, user_dim=2, maxlen=3, dropout=0.0)).eval()
    users = torch.tensor([1, 2])
    seq = torch.tensor([[0, 3, 4], [1, 2, 5]])
    pos = torch.tensor([[0, 4, 6], [2, 5, 1]])
    neg = torch.tensor([[1, 2, 3], [4, 3, 2]])
    hidden = model(users, seq)
    by_hand_bce, by_hand_ce = 0.0, 0.0
    for b in range(2):
        for t in range(3):
            if pos[b, t] == 0:
                continue
            scores = model.score_all(hidden[b, t][None], users[b : b + 1])[0]
            by_hand_bce -= torch.log(torch.sigmoid(scores[pos[b, t]])) + torch.log(1 - torch.sigmoid(scores[neg[b, t]]))
            by_hand_ce -= torch.log_softmax(scores, 0)[pos[b, t]]
    assert loss_sum(model, users, seq, pos, neg, "bce", dense=False).item() == pytest.approx(by_hand_bce.item(),
                                                                                            rel=1e-5)
    for dense in (False, True):
        assert loss_sum(model, users, seq, pos, None, "ce", dense).item() == pytest.approx(by_hand_ce.item(), rel=1e-5)
        both = loss_sum(model, users, seq, pos, neg, "bce+ce", dense).item()
        assert both == pytest.approx(by_hand_bce.item() + by_hand_ce.item(), rel=1e-5)


def test_dense_ce_gives_the_gathered_gradient(ml1m_slice: data.SequenceData) -> None:
    """The GPU form of CE (every position, padded targets ignored) equals the CPU form."""
    split = data.leave_one_out(ml1m_slice)
    batch = next(TrainSampler(split, 32, 100, np.random.default_rng(0), 0.5, 0.1).epoch())
    assert (batch.pos == 0).any()
    torch.manual_seed(0)
    model = SSEPT(SSEPTConfig(ml1m_slice.n_users, ml1m_slice.n_items, item_dim=16, user_dim=8, maxlen=100,
                              dropout=0.0))
    args = [torch.from_numpy(a) for a in (batch.users, batch.seq, batch.pos)]
    grads = []
    for dense in (False, True):
        model.zero_grad()
        loss_sum(model, *args, None, "ce", dense).backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    for k, g in grads[0].items():
        assert_close_scaled(grads[1][k], g, msg=k)


def _cpp_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU backend would use, if the machine has one."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


@pytest.mark.skipif(_cpp_compiler() is None, reason="torch.compile on the CPU needs a C++ compiler (none found)")
def test_compiled_loss_trains_like_eager(tmp_path: Path) -> None:
    """`compile="default"`: one epoch gives the eager epoch's loss and scores (same dropout masks).

    Scores, not raw weights: the key bias gets a zero gradient up to rounding (softmax ignores
    a shift shared by all keys), and Adam turns that rounding noise into full-size steps.
    Compiled kernels fuse and reorder float32 sums, and Adam amplifies the difference over
    an epoch's steps, so the scores agree within 1e-3 of their largest magnitude (measured:
    below 1e-5 of it on AMD EPYC and Intel Xeon); a wrong compiled loss misses by far more.
    """
    split = data.leave_one_out(data.load(_synthetic(tmp_path / "s.txt", users=40)))
    probe = next(TrainSampler(split, 40, 30, np.random.default_rng(1)).epoch())
    out = []
    for mode in ("off", "default"):
        tc = TC(compile=mode, chunks=1)
        torch.manual_seed(0)
        model = SSEPT(_config(split, dropout=0.2))
        model.seed_dropout(0)
        sampler = TrainSampler(split, 16, 30, np.random.default_rng(0), 0.5, 0.1)
        try:
            loss = train_epoch(model, sampler, make_optimizer(model, tc), tc, torch.device("cpu"))
        except Exception as err:  # only the C++ toolchain failing on inductor's code is a reason to skip
            if "CppCompileError" not in f"{type(err).__name__}: {err}":
                raise
            pytest.skip(f"torch.compile's C++ backend cannot build here ({type(err).__name__}; e.g. under "
                        "ATEN_CPU_CAPABILITY=default, whose headers lack the vector types inductor emits)")
        scores = model.eval().predict(torch.from_numpy(probe.users), torch.from_numpy(probe.seq), None)
        out.append((loss, scores[:, 1:]))
    assert make_loss_fn("default") is not loss_sum  # the compiled path really ran
    assert out[1][0] == pytest.approx(out[0][0], rel=1e-4)
    assert_close_scaled(out[1][1], out[0][1], rel=1e-3)


def _poison_at(monkeypatch: pytest.MonkeyPatch, epoch: int, before_step: bool) -> None:
    """From `epoch` on, fill the final layer norm with NaN: before the epoch's training (a NaN
    loss) or after it (NaN scores in that epoch's evaluation)."""
    real = train_module.train_epoch
    seen = {"epochs": 0}

    def poisoned(model, *args, **kwargs):
        seen["epochs"] += 1
        if seen["epochs"] >= epoch and before_step:
            model.final_norm.weight.data.fill_(float("nan"))
        loss = real(model, *args, **kwargs)
        if seen["epochs"] >= epoch and not before_step:
            model.final_norm.weight.data.fill_(float("nan"))
        return loss

    monkeypatch.setattr(train_module, "train_epoch", poisoned)


def test_nan_scores_stop_the_run_and_keep_the_good_best(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    split = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "s.txt")))
    out = tmp_path / "run"
    _poison_at(monkeypatch, epoch=3, before_step=False)
    with pytest.raises(NonFiniteError, match=r"epoch 3: evaluation on the valid split \(sampled protocol\)"):
        fit(split, _config(split), TC(epochs=4, eval_every=1), out, progress=False)
    best, last = read_checkpoint(out / "best.pt"), read_checkpoint(out / "last.pt")
    assert best["epoch"] <= 2 and last["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in best["model"].values())


def test_nan_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    split = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "s.txt")))
    out = tmp_path / "run"
    _poison_at(monkeypatch, epoch=2, before_step=True)
    with pytest.raises(NonFiniteError, match=r"epoch 2: the training loss is nan.*last.pt, best.pt\) are kept"):
        fit(split, _config(split), TC(epochs=3), out, progress=False)
    assert read_checkpoint(out / "last.pt")["epoch"] == 1


def test_patience_stops_after_evaluations_without_improvement(tmp_path: Path) -> None:
    split = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "s.txt", users=48)))
    result = fit(split, _config(split), TC(epochs=60, eval_every=1, patience=2, lr=0.05), progress=False)
    hist = result.history
    assert result.stop_reason == "patience"
    assert len(hist) == result.best["epoch"] + 2  # exactly two evaluations after the best one
    assert (hist["valid_ndcg@10"].iloc[-2:] <= result.best["valid_ndcg@10"]).all()
    capped = fit(split, _config(split), TC(epochs=2, eval_every=1, patience=5), progress=False)
    assert capped.stop_reason == "cap" and len(capped.history) == 2


def test_cli_resume_keeps_the_stored_settings(tmp_path: Path) -> None:
    dataset, out = _synthetic(tmp_path / "s.txt"), tmp_path / "run"
    where = ["--dataset", str(dataset), "--out", str(out), "--quiet"]
    small = ["--item-dim", "16", "--user-dim", "8", "--maxlen", "30", "--num-blocks", "1",
             "--batch-size", "16", "--eval-negatives", "10"]
    assert train_main([*where, *small, "--epochs", "1", "--lr", "0.01", "--chunks", "2"]) == 0
    assert train_main([*where, "--resume", "--epochs", "2"]) == 0  # nothing else repeated
    stored = json.loads((out / "run.json").read_text())
    assert (stored["train"]["lr"], stored["train"]["chunks"], stored["train"]["epochs"]) == (0.01, 2, 2)
    assert stored["model"]["item_dim"] == 16
    assert read_checkpoint(out / "last.pt")["epoch"] == 2
    with pytest.raises(ConfigError, match=r"differs in: train.lr 0.01 -> 0.1"):
        train_main([*where, "--resume", "--epochs", "3", "--lr", "0.1"])


def test_auto_pieces_per_batch_follow_the_device() -> None:
    assert pieces_per_batch(TC(), torch.device("cpu")) == 4
    assert pieces_per_batch(TC(), torch.device("cuda")) == 1
    assert pieces_per_batch(TC(chunks=3), torch.device("cuda")) == 3
    with pytest.raises(ConfigError, match="chunks must be >= 0"):
        TC(chunks=-1)


def test_runs_from_before_chunks_resume_with_chunks_1(tmp_path: Path) -> None:
    split = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "s.txt")))
    out = tmp_path / "run"
    fit(split, _config(split), TC(epochs=1, chunks=1), out, progress=False)
    run = json.loads((out / "run.json").read_text())
    del run["train"]["chunks"]  # as written before the setting existed
    (out / "run.json").write_text(json.dumps(run))
    with pytest.raises(ConfigError, match=r"train.chunks 1 -> 0"):
        fit(split, _config(split), TC(epochs=2), out, resume=True, progress=False)
    result = fit(split, _config(split), TC(epochs=2, chunks=1), out, resume=True, progress=False)
    assert len(result.history) == 2


def test_batch_larger_than_users(tmp_path: Path) -> None:
    split = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "s.txt", users=10)))
    with pytest.raises(ConfigError, match="batch_size 128 must be between 1 and the number of training users"):
        fit(split, _config(split), TC(epochs=1, batch_size=128), progress=False)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="p_user must be in"):
        TrainConfig(p_user=1.2)
    with pytest.raises(ConfigError, match="loss must be one of"):
        TrainConfig(loss="mse")


def test_evaluate_on_other_dataset_is_refused(tmp_path: Path) -> None:
    split = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "s.txt")))
    other = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "o.txt", items=50)))
    model = SSEPT(_config(split))
    with pytest.raises(CheckpointError, match="model was built for 120 users and 40 items"):
        Evaluator(other, "valid", "sampled", n_negatives=10)(model)


def test_transfer_copies_encoder_and_freezes(tmp_path: Path) -> None:
    src_split = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "a.txt", items=40)))
    dst_split = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "b.txt", users=80, items=45, seed=1)))
    fit(src_split, _config(src_split), TC(epochs=1), tmp_path / "src", progress=False)
    ckpt = read_checkpoint(tmp_path / "src" / "last.pt")
    # The copied weights equal the checkpoint's.
    model = SSEPT(_config(dst_split))
    copied = transfer_encoder(model, ckpt, "src", same_data=False)
    assert copied and all(k.startswith(("pos_emb", "blocks", "final_norm")) for k in copied)
    for k in copied:
        assert torch.equal(model.state_dict()[k], ckpt["model"][k])
    # Frozen encoder: unchanged after training; the tables do change.
    frozen = fit(dst_split, _config(dst_split), TC(epochs=1, freeze_encoder=True),
                 init_from=tmp_path / "src" / "last.pt", progress=False)
    state = frozen.model.state_dict()
    for k in copied:
        assert torch.equal(state[k], ckpt["model"][k]), k
    assert not torch.equal(state["item_emb.weight"], SSEPT(_config(dst_split)).state_dict()["item_emb.weight"])


def test_transfer_width_mismatch(tmp_path: Path) -> None:
    split = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "a.txt")))
    fit(split, _config(split), TC(epochs=1), tmp_path / "src", progress=False)
    with pytest.raises(ConfigError, match="init_from .* its dim is 24 but the new config has 40"):
        fit(split, _config(split, item_dim=32), TC(epochs=1),
            init_from=tmp_path / "src" / "last.pt", progress=False)


def _train_cmd(dataset: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "helpers.train", "--dataset", str(dataset), "--out", str(out), "--quiet",
            "--epochs", "12", "--batch-size", "16", "--eval-every", "3", "--item-dim", "16", "--user-dim", "8",
            "--maxlen", "30", "--num-blocks", "1", "--p-sub", "0.3", "--seed", "11", "--eval-negatives", "10", *extra]


def cli_configs(monkeypatch: pytest.MonkeyPatch, argv: list[str], n_users: int = 30,
                n_items: int = 40) -> tuple[SSEPTConfig, TrainConfig]:
    """The model and training configs `python -m helpers.train ARGV` builds, on a dataset of that size
    (nothing is loaded or trained: `fit` is replaced by a capture)."""
    got: dict[str, object] = {}

    class StopError(Exception):
        pass

    def capture(split, model_config, config, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        got.update(model=model_config, train=config)
        raise StopError

    monkeypatch.setattr(train_module, "fit", capture)
    monkeypatch.setattr(train_module, "leave_one_out", lambda data: type("S", (), {"data": data})())
    monkeypatch.setattr(train_module, "load", lambda name: type("D", (), {"n_users": n_users, "n_items": n_items})())
    with pytest.raises(StopError):
        train_module.main(argv)
    return got["model"], got["train"]  # type: ignore[return-value]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def test_kill_and_resume_gives_identical_run(tmp_path: Path) -> None:
    dataset = _synthetic(tmp_path / "s.txt", users=400)
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run(_train_cmd(dataset, full), check=True, env=_env(), cwd=ROOT, capture_output=True)
    proc = subprocess.Popen(_train_cmd(dataset, cut), env=_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (cut / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(0.15)  # land somewhere inside a later epoch or checkpoint write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = read_checkpoint(cut / "last.pt")["epoch"]
    assert killed_at < 12, "the run finished before it was killed; the test proves nothing"
    # Damage the newest checkpoint too: the resume must fall back to the previous one and say so.
    raw = (cut / "last.pt").read_bytes()
    (cut / "last.pt").write_bytes(raw[: len(raw) // 3])
    res = subprocess.run(_train_cmd(dataset, cut, "--resume"), env=_env(), cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "falling back to the previous good checkpoint" in res.stderr + res.stdout
    a, b = read_checkpoint(full / "last.pt"), read_checkpoint(cut / "last.pt")
    assert a["epoch"] == b["epoch"] == 12
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    metric_cols = [k for k in a["history"][-1] if k.startswith(("valid_", "test_")) or k == "loss"]
    for ra, rb in zip(a["history"], b["history"]):
        assert [ra.get(k) for k in metric_cols] == [rb.get(k) for k in metric_cols]


def test_cli_errors_exit_nonzero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2\n1 x\n")
    res = subprocess.run([sys.executable, "-m", "helpers.train", "--dataset", str(bad), "--out", str(tmp_path / "o")],
                         env=_env(), cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: {bad}, line 2: item is not an integer: '1 x'"
    res = subprocess.run([sys.executable, "-m", "helpers.evaluate", "--checkpoint", str(bad), "--dataset", "wiki1000"],
                         env=_env(), cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2 and "not a readable checkpoint" in res.stderr


def test_a_finished_run_reloads_without_a_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bar frozen at 100% would read as training that just ran; a run with epochs left still shows one."""
    split = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "s.txt")))
    fit(split, _config(split), TC(epochs=2), tmp_path / "run", progress=False)
    capsys.readouterr()
    fit(split, _config(split), TC(epochs=2), tmp_path / "run", resume=True, progress=True, log=lambda _: None)
    assert "train " not in capsys.readouterr().err
    fit(split, _config(split), TC(epochs=3), tmp_path / "run", resume=True, progress=True, log=lambda _: None)
    assert "train " in capsys.readouterr().err
