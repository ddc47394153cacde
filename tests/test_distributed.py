"""Several processes (torchrun, helpers.distributed): 2 gloo processes on the CPU, one torch thread each.

Starting processes dominates the time, so the checks share launches: one `torch.multiprocessing`
session (`two_ranks`, a file store) trains a few steps, evaluates and then runs the command line's
training as torchrun would (the uninterrupted reference); three torchrun launches cover the
command line (a killed run, its resumption, and an error), and two pairs of launches play two
machines without shared storage (a run stopped and resumed).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from helpers import data
from helpers.checkpoint import read_checkpoint
from helpers.distributed import SharedEvaluator, World, process_group, world_from_env, wrap
from helpers.errors import ConfigError, NonFiniteError
from helpers.evaluate import Evaluator
from helpers.model import SSEPT, load_checkpoint
from helpers.sampler import TrainSampler
from helpers.settings import SELECTION_PROTOCOLS, SSEPTConfig, TrainConfig
from helpers.train import fit, train_epoch, training_setup
from helpers.train import main as train_main
from tests.test_train import ROOT, SMALL, _env, _synthetic

CPU = torch.device("cpu")
#: The equality checks: dropout and SSE off, loss "ce" (no negatives drawn), a last batch split 5 / 5.
EXACT_TRAIN = {"batch_size": 25, "loss": "ce", "p_user": 0.0, "p_item": 0.0, "p_sub": 0.0, "seed": 5,
               "eval_negatives": 10}
#: Plain SGD for the weight comparison, with a step large enough to move every weight visibly. Adam would
#: turn the rounding noise of gradients that are exactly zero in exact arithmetic (the key bias; under CE
#: the user part of the hidden state, which shifts every item's score alike) into full-size steps.
SGD_LR = 1.0
#: The command line of the reference run and of the torchrun launches (SSE, SSE-PT++ and dropout on).
RUN_FLAGS = ["--quiet", "--epochs", "8", "--batch-size", "16", "--eval-every", "2", "--item-dim", "16",
             "--user-dim", "8", "--maxlen", "30", "--num-blocks", "1", "--p-sub", "0.3", "--seed", "11",
             "--eval-negatives", "10", "--resume"]
#: Seconds torchrun may take to stop the other rank and exit after one is killed (measured: ~1 s, see docs/model.md).
STOP_LIMIT_S = 60


def _model_config(split: data.Split) -> SSEPTConfig:
    return SSEPTConfig(split.data.n_users, split.data.n_items, **{**SMALL, "dropout": 0.0, "attn_dropout": 0.0})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, tmp: str, dataset: str, reference: str, port: int) -> None:
    """One of the two processes of `two_ranks`; writes what it found to tmp/rank{rank}.pt."""
    torch.set_num_threads(1)
    split = data.leave_one_out(data.read_pairs(dataset))
    tc = TrainConfig(**EXACT_TRAIN)
    out: dict[str, Any] = {}
    with process_group("gloo", world=World(rank, 2, rank), init_method=f"file://{tmp}/store") as world:
        model, _, sampler, _ = training_setup(split, _model_config(split), tc, CPU, world=world)
        train_epoch(wrap(model, world, CPU), sampler, torch.optim.SGD(model.parameters(), SGD_LR), tc, CPU,
                    world=world)
        out["state"] = {k: v.clone() for k, v in model.state_dict().items()}
        out["metrics"] = {p: SharedEvaluator(split, w, p, 0, 10, world, CPU)(model)
                          for p in SELECTION_PROTOCOLS for w in ("valid",)}
        if rank == 1:  # a diverged model on one rank only: every rank must stop, none may wait
            model.final_norm.weight.data.fill_(float("nan"))
        try:
            SharedEvaluator(split, "test", "sampled", 0, 10, world, CPU)(model)
        except NonFiniteError as err:
            out["nan"] = str(err)
        # Rank 1 reads another file of the same shape (a machine with another copy of the data).
        other = data.leave_one_out(data.read_pairs(dataset if rank == 0 else Path(tmp) / "other.txt"))
        try:
            fit(other, _model_config(other), TrainConfig(**EXACT_TRAIN, epochs=1), world=world, progress=False)
        except ConfigError as err:
            out["mixed"] = str(err)
    torch.save(out, Path(tmp) / f"rank{rank}.pt")
    # The command line's training, in the environment torchrun gives its processes.
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    train_main(["--dataset", dataset, "--out", reference, *RUN_FLAGS])


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run `_rank` in 2 processes; their findings, the dataset and the reference run folder."""
    tmp = tmp_path_factory.mktemp("ranks")
    dataset = _synthetic(tmp / "s.txt", users=110, items=60)
    _synthetic(tmp / "other.txt", users=110, items=60, seed=1)
    reference = tmp / "reference"
    t0 = time.perf_counter()
    mp.spawn(_rank, args=(str(tmp), str(dataset), str(reference), _free_port()), nprocs=2)
    return {"ranks": [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(2)],
            "dataset": dataset, "reference": reference, "seconds": time.perf_counter() - t0}


def test_two_processes_step_like_one_with_the_global_batch(two_ranks: dict[str, Any]) -> None:
    """(a) One epoch (5 steps, the last batch split 5 / 5) on 2 ranks gives one process's weights."""
    split = data.leave_one_out(data.read_pairs(two_ranks["dataset"]))
    tc = TrainConfig(**EXACT_TRAIN)
    model, _, sampler, _ = training_setup(split, _model_config(split), tc, CPU)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    assert len(sampler) == 5
    train_epoch(model, sampler, torch.optim.SGD(model.parameters(), SGD_LR), tc, CPU)
    ours, theirs = two_ranks["ranks"][0]["state"], two_ranks["ranks"][1]["state"]
    moved = 0.0
    for name, expected in model.state_dict().items():
        assert torch.equal(ours[name], theirs[name]), name  # DDP keeps the ranks identical
        # float32 sums in another order (shares, pieces) through 5 steps: within 1e-5 of the largest weight
        scale = float(expected.abs().max())
        torch.testing.assert_close(ours[name], expected, rtol=1e-5, atol=1e-5 * max(scale, 1e-12), msg=name)
        moved = max(moved, float((expected - start[name]).abs().max()) / max(scale, 1e-12))
    assert moved > 0.01  # the steps moved the weights far beyond the tolerance


def test_shared_evaluation_equals_one_process_exactly(two_ranks: dict[str, Any]) -> None:
    """(b) Every protocol, split over 2 ranks by batches and gathered: exactly one process's metrics."""
    split = data.leave_one_out(data.read_pairs(two_ranks["dataset"]))
    model = SSEPT(_model_config(split))
    model.load_state_dict(two_ranks["ranks"][0]["state"])
    assert Evaluator(split, "valid", "full").users.size > 3 * 32  # both ranks rank more than one batch
    for protocol in SELECTION_PROTOCOLS:
        expected = Evaluator(split, "valid", protocol, 0, 10)(model)
        for rank in (0, 1):
            assert two_ranks["ranks"][rank]["metrics"][protocol] == expected, (protocol, rank)
    for rank in (0, 1):  # the NaN was on rank 1's weights only
        assert "evaluation on the test split (sampled protocol)" in two_ranks["ranks"][rank]["nan"]


def test_ranks_reading_different_data_are_refused(two_ranks: dict[str, Any]) -> None:
    """Rank 1 read another file with the same users and items: every rank refuses, naming the difference."""
    messages = [two_ranks["ranks"][rank].get("mixed") for rank in (0, 1)]
    assert messages[0] == messages[1]
    assert messages[0] is not None and messages[0].startswith("rank 1 does not run rank 0's training")
    assert "data.digest" in messages[0] and "dataset 's' -> 'other'" in messages[0]
    assert "every machine needs the same dataset file" in messages[0]


def test_data_digest_sees_order_and_ids() -> None:
    """The digest changes with an item, with the order of a user's items, and with a row moved between users."""
    def digest(items: list[int], offsets: list[int]) -> str:
        return data.SequenceData("d", 2, 9, np.array(offsets), np.array(items)).digest()

    base = digest([1, 2, 3, 4], [0, 0, 2, 4])
    assert base == digest([1, 2, 3, 4], [0, 0, 2, 4])
    assert len({base, digest([1, 2, 3, 5], [0, 0, 2, 4]), digest([2, 1, 3, 4], [0, 0, 2, 4]),
                digest([1, 2, 3, 4], [0, 0, 3, 4])}) == 4


def test_shares_cover_each_global_batch_once() -> None:
    """Every rank cuts the same global batches; the shares are disjoint, cover them, and know their positions."""
    split = data.leave_one_out(data.SequenceData("toy", 23, 30, np.r_[0, 0, np.cumsum(np.full(23, 20))],
                                                 np.tile(np.arange(1, 21), 23)))
    split.train_len[5::4] = 2  # some short histories among long ones
    samplers = [TrainSampler(split, 11, 12, np.random.default_rng([1, r]), p_sub=0.5, p_item=0.2,
                             order_rng=np.random.default_rng(9), rank=r, world=2) for r in (0, 1)]
    assert len(samplers[0]) == 2  # 23 users: 11 + 12 (a last batch of 1 < 2 processes joins the one before)
    orders = [TrainSampler(split, 11, 12, np.random.default_rng(r), order_rng=np.random.default_rng(9), rank=r,
                           world=2).global_batches() for r in (0, 1)]
    assert [b.size for b in orders[0]] == [11, 12]
    assert all(np.array_equal(x, y) for x, y in zip(*orders))  # the order is shared, the draws are not
    seen: list[int] = []
    for (a, n_a), (b, n_b) in zip(samplers[0].shares(), samplers[1].shares()):
        assert n_a == n_b == a.n_positions + b.n_positions  # known before drawing, SSE-PT++ windows or not
        assert np.intersect1d(a.users, b.users).size == 0
        seen += [*a.users, *b.users]
    assert sorted(seen) == list(range(1, 24))  # p_user is 0: the fed users are the trained ones


def test_error_cases_name_the_fix(tmp_path: Path) -> None:
    """(d) Without launching: NCCL without CUDA, more processes than training users."""
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"backend nccl needs CUDA, and this run is on cpu; use --backend gloo"):
            train_main(["--dataset", str(tmp_path / "absent.txt"), "--backend", "nccl"])
    split = data.leave_one_out(data.read_pairs(_synthetic(tmp_path / "s.txt", users=3)))
    with pytest.raises(ConfigError, match=r"^5 processes but only 3 training users: .* launch at most 3"):
        fit(split, _model_config(split), TrainConfig(batch_size=2, epochs=1), world=World(0, 5), progress=False)
    with pytest.raises(ConfigError, match=r"batch_size 2 is the global batch, shared by 3 processes"):
        fit(split, _model_config(split), TrainConfig(batch_size=2, epochs=1), world=World(0, 3), progress=False)
    with pytest.raises(ConfigError, match="compile 'default' is not supported with several processes"):
        fit(split, _model_config(split), TrainConfig(batch_size=2, compile="default"), world=World(0, 2))
    assert world_from_env({}) is None
    assert world_from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == World(1, 2, 1)


# --------------------------------------------------------------------------- torchrun


def _torchrun(dataset: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "helpers.train", "--dataset", str(dataset), "--out", str(out), *RUN_FLAGS, *extra]


def _node(node: int, cwd: Path, dataset: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    """One of two machines of a multi-node launch (static rendezvous: machine `node` holds rank `node`),
    in its own working folder, so that `--out runs/x` is a folder on that machine alone."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
           "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
           "-m", "helpers.train", "--dataset", str(dataset), "--out", "runs/x", *RUN_FLAGS, *extra]
    return subprocess.Popen(cmd, env=_env(), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _two_machines(tmp: Path, dataset: Path, *extra: str) -> None:
    """Launch both machines and wait; fail with their messages if either fails."""
    port = _free_port()
    procs = [_node(n, tmp / f"machine{n}", dataset, port, *extra) for n in (0, 1)]
    try:
        errors = [proc.communicate(timeout=STOP_LIMIT_S)[1] for proc in procs]
    except subprocess.TimeoutExpired:
        for pid in [pid for proc in procs for pid in [*_descendants(proc.pid), proc.pid]]:
            with contextlib.suppress(ProcessLookupError):  # leave nothing running behind a failed test
                os.kill(pid, signal.SIGKILL)
        pytest.fail(f"the two machines were still running after {STOP_LIMIT_S} s")
    assert [proc.returncode for proc in procs] == [0, 0], errors


def test_two_machines_without_shared_storage_resume_like_one(two_ranks: dict[str, Any], tmp_path: Path) -> None:
    """Two machines (two torchrun agents, one process each), each with its own `runs/`: rank 0 alone keeps
    the run folder, and a run stopped at epoch 4 and relaunched ends on exactly the single-machine
    2-process run's weights and metrics, with nothing written on the other machine."""
    for n in (0, 1):
        (tmp_path / f"machine{n}").mkdir()
    _two_machines(tmp_path, two_ranks["dataset"], "--epochs", "4")
    assert read_checkpoint(tmp_path / "machine0" / "runs" / "x" / "last.pt")["epoch"] == 4
    _two_machines(tmp_path, two_ranks["dataset"])  # RUN_FLAGS: --epochs 8 --resume
    assert not (tmp_path / "machine1" / "runs").exists()
    a = read_checkpoint(two_ranks["reference"] / "last.pt")
    b = read_checkpoint(tmp_path / "machine0" / "runs" / "x" / "last.pt")
    assert a["epoch"] == b["epoch"] == 8 and b["world_size"] == 2
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    cols = [k for k in a["history"][-1] if k.startswith(("valid_", "test_")) or k == "loss"]
    assert [[r.get(k) for k in cols] for r in a["history"]] == [[r.get(k) for k in cols] for r in b["history"]]


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc)."""
    found, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def _rank_pid(launcher: int, rank: int) -> int | None:
    """The pid of the torchrun worker of that rank, if it is running."""
    for pid in _descendants(launcher):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"TORCHELASTIC_RUN_ID=" in b" ".join(env):
            return pid
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds torchrun's workers through /proc")
def test_killed_rank_stops_the_run_and_relaunching_resumes_it(two_ranks: dict[str, Any]) -> None:
    """(c) SIGKILL one rank after the first checkpoint: torchrun stops the other without hanging, and
    the same command resumes and ends on exactly the uninterrupted run's weights and metrics."""
    dataset, reference = two_ranks["dataset"], two_ranks["reference"]
    cut = reference.parent / "cut"
    proc = subprocess.Popen(_torchrun(dataset, cut), env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (cut / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    victim = _rank_pid(proc.pid, 1)
    assert victim is not None and proc.poll() is None, "the run ended before a rank could be killed"
    os.kill(victim, signal.SIGKILL)
    killed = time.perf_counter()
    try:
        proc.communicate(timeout=STOP_LIMIT_S)
    except subprocess.TimeoutExpired:
        for pid in [*_descendants(proc.pid), proc.pid]:  # leave nothing running behind a failed test
            os.kill(pid, signal.SIGKILL)
        pytest.fail(f"torchrun was still running {STOP_LIMIT_S} s after rank 1 was killed")
    stopped_s = time.perf_counter() - killed
    assert proc.returncode != 0
    killed_at = read_checkpoint(cut / "last.pt")["epoch"]
    assert killed_at < 8, "the run finished before it was killed; the test proves nothing"
    res = subprocess.run(_torchrun(dataset, cut), env=_env(), cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    a, b = read_checkpoint(reference / "last.pt"), read_checkpoint(cut / "last.pt")
    assert a["epoch"] == b["epoch"] == 8 and a["world_size"] == b["world_size"] == 2
    assert len(b["rng"]) == 2  # each rank's random state
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    cols = [k for k in a["history"][-1] if k.startswith(("valid_", "test_")) or k == "loss"]
    assert [[r.get(k) for k in cols] for r in a["history"]] == [[r.get(k) for k in cols] for r in b["history"]]
    print(f"torchrun stopped {stopped_s:.2f} s after rank 1 was killed (at epoch {killed_at})")


def test_best_checkpoint_gives_the_recorded_metrics(two_ranks: dict[str, Any]) -> None:
    """`python -m helpers.evaluate`'s path on a 2-process run's best.pt: the metrics the run recorded."""
    split = data.leave_one_out(data.read_pairs(two_ranks["dataset"]))
    best = read_checkpoint(two_ranks["reference"] / "best.pt")
    model, _ = load_checkpoint(two_ranks["reference"] / "best.pt")
    for which in ("valid", "test"):
        metrics = Evaluator(split, which, "sampled", 0, 10)(model)
        assert {k: metrics[k] for k in ("ndcg@10", "hr@10", "mrr")} == \
            {k: best["best"][f"{which}_{k}"] for k in ("ndcg@10", "hr@10", "mrr")}


def test_resume_with_another_process_count_is_refused(two_ranks: dict[str, Any]) -> None:
    """(d) A 2-process run folder resumed by one process: one line naming both counts."""
    with pytest.raises(ConfigError, match=r"was trained by 2 process\(es\) and this launch has 1; .*"
                                          r"torchrun --nproc_per_node 2"):
        train_main(["--dataset", str(two_ranks["dataset"]), "--out", str(two_ranks["reference"]), *RUN_FLAGS])


def test_a_run_goes_on_with_another_process_count(two_ranks: dict[str, Any], tmp_path: Path) -> None:
    """--new-process-count: the 2-process run (epoch 8) goes on with 1 process to epoch 10, repeatably, keeps
    resuming with 1, and goes back to 2 processes under torchrun; the history names who trained each epoch."""
    folders = [tmp_path / "a", tmp_path / "b"]
    for out in folders:
        shutil.copytree(two_ranks["reference"], out)
        train_main(["--dataset", str(two_ranks["dataset"]), "--out", str(out), *RUN_FLAGS, "--epochs", "10",
                    "--new-process-count"])
    a, b = (read_checkpoint(out / "last.pt") for out in folders)
    start = read_checkpoint(two_ranks["reference"] / "last.pt")
    assert a["epoch"] == 10 and a["world_size"] == 1 and isinstance(a["rng"], dict)
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())  # repeatable from here on
    assert not all(torch.equal(v, start["model"][k]) for k, v in a["model"].items())  # and it trained
    assert a["history"][:8] == start["history"]
    assert [r["device"].endswith(" x 2 processes") for r in a["history"]] == [True] * 8 + [False] * 2
    # Now a 1-process run: a plain resume goes on, and torchrun takes it back to 2 processes.
    train_main(["--dataset", str(two_ranks["dataset"]), "--out", str(folders[1]), *RUN_FLAGS, "--epochs", "11"])
    assert read_checkpoint(folders[1] / "last.pt")["epoch"] == 11
    res = subprocess.run(_torchrun(two_ranks["dataset"], folders[0], "--epochs", "12", "--new-process-count"),
                         env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    c = read_checkpoint(folders[0] / "last.pt")
    assert c["epoch"] == 12 and c["world_size"] == 2 and len(c["rng"]) == 2
    assert [r["device"].endswith(" x 2 processes") for r in c["history"]] == [True] * 8 + [False] * 2 + [True] * 2
    assert all(np.isfinite(r["loss"]) for r in c["history"]) and "valid_ndcg@10" in c["history"][-1]


def test_an_error_under_torchrun_is_one_line(tmp_path: Path) -> None:
    """(d) Both ranks meet the same error; it is printed once, and the launch fails."""
    if torch.cuda.is_available():
        pytest.skip("the error case is NCCL without CUDA")
    res = subprocess.run(_torchrun(_synthetic(tmp_path / "s.txt"), tmp_path / "o", "--backend", "nccl"),
                         env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert lines == ["error: backend nccl needs CUDA, and this run is on cpu; use --backend gloo (or auto), "
                     "or train on a GPU"]
