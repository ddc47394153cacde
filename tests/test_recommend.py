"""Recommendations for any history: the function, the unknown-user scorer and the command line, on tiny models."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import baselines, convert, data, recommend
from helpers.errors import CheckpointError, ConfigError, DataError, NonFiniteError
from helpers.evaluate import Evaluator
from helpers.model import SSEPT
from helpers.notebook.session import history_and_recommendations
from helpers.settings import SSEPTConfig, TrainConfig
from helpers.studies.unknown_user import measure_unknown_user
from helpers.train import fit
from helpers.utils import run_cli

N_USERS, N_ITEMS, MAXLEN = 6, 15, 5


def assert_close(actual: np.ndarray | torch.Tensor, expected: np.ndarray | torch.Tensor) -> None:
    """Equal up to float32 rounding scaled by the largest |entry| (kernels differ between CPUs)."""
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * max(scale, 1e-12))


def tiny_model(user_dim: int = 4, seed: int = 0) -> SSEPT:
    """A small random model (dropout on, so evaluation mode matters)."""
    torch.manual_seed(seed)
    config = SSEPTConfig(n_users=N_USERS, n_items=N_ITEMS, item_dim=4, user_dim=user_dim, maxlen=MAXLEN,
                         num_blocks=1, dropout=0.5)
    return SSEPT(config).eval()


def all_scores(model: SSEPT, history: list[int], user: int) -> np.ndarray:
    """Brute force: every item's score after the last MAXLEN items, straight from `predict`."""
    window = torch.tensor([history[-MAXLEN:]])
    return model.predict(torch.tensor([user]), window, None)[0].numpy()


@pytest.fixture(params=[4, 0], ids=["ssept", "sasrec"])
def model(request: pytest.FixtureRequest) -> SSEPT:
    return tiny_model(user_dim=request.param)


HISTORY = [3, 7, 7, 1, 12, 5, 9]  # longer than MAXLEN, with a repeat


# --------------------------------------------------------------------------- recommend


def test_never_returns_history_or_padding(model: SSEPT) -> None:
    for user in (2, None):
        recs = recommend.recommend(model, HISTORY, user=user, k=N_ITEMS)
        assert not set(recs.items.tolist()) & set(HISTORY) and 0 not in recs.items
        assert len(recs.items) == N_ITEMS - len(set(HISTORY))  # every other item, then no more


def test_returns_the_k_best_by_score(model: SSEPT) -> None:
    """The k returned are the top k of a brute-force ranking of the allowed items (near-ties may swap)."""
    scores = all_scores(model, HISTORY, user=2)
    allowed = [i for i in range(1, N_ITEMS + 1) if i not in HISTORY]
    expected = sorted(scores[allowed], reverse=True)[:4]
    recs = recommend.recommend(model, HISTORY, user=2, k=4)
    assert_close(recs.scores, np.array(expected, dtype=np.float32))
    assert_close(recs.scores, scores[recs.items])
    assert list(recs.scores) == sorted(recs.scores, reverse=True)


def test_allow_repeats_ranks_every_item(model: SSEPT) -> None:
    scores = all_scores(model, HISTORY, user=2)
    recs = recommend.recommend(model, HISTORY, user=2, k=N_ITEMS, allow_repeats=True)
    assert sorted(recs.items.tolist()) == list(range(1, N_ITEMS + 1))
    assert_close(recs.scores, np.sort(scores[1:])[::-1].copy())


def test_same_answer_twice_and_mode_restored(model: SSEPT) -> None:
    first = recommend.recommend(model, HISTORY, user=3, k=5)
    model.train()  # dropout on: recommend must switch it off and put training mode back
    second = recommend.recommend(model, HISTORY, user=3, k=5)
    assert model.training
    assert np.array_equal(first.items, second.items) and np.array_equal(first.scores, second.scores)


def test_only_the_last_maxlen_items_enter(model: SSEPT) -> None:
    """A long history scores as its last MAXLEN items; all of it is still left out."""
    long = recommend.recommend(model, HISTORY, user=1, k=N_ITEMS, allow_repeats=True)
    window = recommend.recommend(model, HISTORY[-MAXLEN:], user=1, k=N_ITEMS, allow_repeats=True)
    assert np.array_equal(long.items, window.items)
    excluded = recommend.recommend(model, HISTORY, user=1, k=N_ITEMS)
    assert 3 not in excluded.items  # item 3 is outside the window but in the history


def test_ties_break_by_smaller_id() -> None:
    """A constant scorer: every score equal, so the order is by id."""
    split = data.leave_one_out(data.SequenceData("c", 1, 6, np.array([0, 0, 3], dtype=np.int64),
                                                 np.array([2, 3, 4], dtype=np.int64)))

    class Constant(baselines.Popularity):
        def score_all(self, users: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
            return torch.ones(seqs.shape[0], 7)

    recs = recommend.recommend(Constant(split, 5), [4, 2], k=3)
    assert recs.items.tolist() == [1, 3, 5]


def test_baseline_popularity(small_split_file: Path) -> None:
    split = data.leave_one_out(data.read_pairs(small_split_file))
    pop = baselines.Popularity(split, maxlen=10)
    hist = split.data.user_items(2)[: split.history_len("test")[2]]
    recs = recommend.recommend(pop, hist, user=2, k=3)
    allowed = [i for i in range(1, split.data.n_items + 1) if i not in set(hist.tolist())]
    assert not set(recs.items.tolist()) & set(hist.tolist())
    assert recs.scores[0] == pop.counts[allowed].max()


@pytest.mark.parametrize(
    ("history", "user", "k", "error", "needle"),
    [
        ([1, 99], 1, 10, DataError, "item 99 is not in the model's catalogue (ids 1..15)"),
        ([0, 2], 1, 10, DataError, "item 0 is not in the model's catalogue"),
        ([], 1, 10, ConfigError, "non-empty"),
        ([1.5], 1, 10, ConfigError, "integers"),
        ([1, 2], 7, 10, DataError, "user 7 is not one of the model's users (ids 1..6)"),
        ([1, 2], 1, 0, ConfigError, "k must be at least 1"),
    ],
)
def test_bad_input(history: list, user: int, k: int, error: type, needle: str) -> None:
    with pytest.raises(error) as info:
        recommend.recommend(tiny_model(), history, user=user, k=k)
    assert needle in str(info.value)


def test_nan_scores_are_refused() -> None:
    model = tiny_model()
    with torch.no_grad():
        model.item_emb.weight[4] = float("nan")
    with pytest.raises(NonFiniteError, match="NaN or infinite"):
        recommend.recommend(model, [1, 2], user=1)


def test_notebook_table_uses_recommend(small_split_file: Path) -> None:
    split = data.leave_one_out(data.read_pairs(small_split_file))
    model = tiny_model()
    last, recs = history_and_recommendations(model, split, user=2, titles={}, k=3)
    hist = split.data.user_items(2)[: split.history_len("test")[2]]
    assert last["item"].tolist() == hist[-3:].tolist()
    assert recs["item"].tolist() == recommend.recommend(model, hist, user=2, k=3).items.tolist()


@pytest.fixture
def small_split_file(tmp_path: Path) -> Path:
    """Four users over items 1..15 (fits the tiny models)."""
    rows = {1: [1, 2, 3, 4, 5], 2: [2, 4, 6, 8, 10, 12], 3: [15, 14, 13], 4: [1, 3, 5, 7, 9, 11, 13, 15]}
    path = tmp_path / "small.txt"
    path.write_text("".join(f"{u} {i}\n" for u, items in rows.items() for i in items))
    return path


# --------------------------------------------------------------------------- unknown users


def test_unknown_mean_is_the_mean_user_vector() -> None:
    """`mean` scores as a model whose user 1 has the mean of the user table."""
    model = tiny_model()
    reference = copy.deepcopy(model)
    with torch.no_grad():
        reference.user_emb.weight[1] = model.user_emb.weight[1:].mean(0)
    seqs = torch.tensor([[0, 0, 3, 7, 1], [1, 2, 3, 4, 5]])
    got = recommend.UnknownUser(model, "mean").predict(torch.tensor([4, 5]), seqs, None)
    want = reference.predict(torch.tensor([1, 1]), seqs, None)
    assert_close(got[:, 1:], want[:, 1:])


def test_unknown_zero_and_table_restored() -> None:
    model = tiny_model()
    before = model.user_emb.weight.detach().clone()
    reference = copy.deepcopy(model)
    with torch.no_grad():
        reference.user_emb.weight[1] = 0.0
    seqs = torch.tensor([[0, 0, 3, 7, 1]])
    got = recommend.UnknownUser(model, "zero").predict(torch.tensor([2]), seqs, None)
    assert_close(got[:, 1:], reference.predict(torch.tensor([1]), seqs, None)[:, 1:])
    assert torch.equal(model.user_emb.weight, before)  # row 0 put back exactly


def test_unknown_random_averages_other_users() -> None:
    """`random` is the mean of the scores under its fixed draws, and never uses the row's own id."""
    model = tiny_model()
    unknown = recommend.UnknownUser(model, "random", draws=3, seed=5)
    seqs = torch.tensor([[0, 0, 3, 7, 1]])
    anon = unknown.predict(torch.tensor([0]), seqs, None)
    want = torch.stack([model.predict(torch.tensor([int(u)]), seqs, None) for u in unknown.draw_ids]).mean(0)
    assert_close(anon[:, 1:], want[:, 1:])
    own = int(unknown.draw_ids[0])  # a row whose own id is among the draws scores it with another id instead
    replaced = [own % N_USERS + 1 if int(u) == own else int(u) for u in unknown.draw_ids]
    want_own = torch.stack([model.predict(torch.tensor([u]), seqs, None) for u in replaced]).mean(0)
    assert_close(unknown.predict(torch.tensor([own]), seqs, None)[:, 1:], want_own[:, 1:])


@pytest.mark.parametrize("mode", recommend.UNKNOWN_USER_MODES)
def test_unknown_user_path(model: SSEPT, mode: str) -> None:
    """Runs for SSE-PT and SASRec; for SASRec (no user part) it equals any known user's answer."""
    anon = recommend.recommend(model, HISTORY, user=None, k=5, unknown_user=mode)
    assert len(anon.items) == 5 and not set(anon.items.tolist()) & set(HISTORY)
    assert np.array_equal(anon.items, recommend.recommend(model, HISTORY, None, 5, unknown_user=mode).items)
    if model.user_emb is None:
        known = recommend.recommend(model, HISTORY, user=4, k=5)
        assert np.array_equal(anon.items, known.items)
        assert_close(anon.scores, known.scores)


def test_unknown_user_mode_checked() -> None:
    with pytest.raises(ConfigError, match="unknown-user mode"):
        recommend.recommend(tiny_model(), HISTORY, unknown_user="median")


def test_unknown_user_measurement_runs(small_split_file: Path) -> None:
    """The Evaluator measures an unknown-user scorer like any model; the table has one row per variant."""
    split = data.leave_one_out(data.read_pairs(small_split_file))
    config = SSEPTConfig(n_users=split.data.n_users, n_items=split.data.n_items, item_dim=4, user_dim=4,
                         maxlen=MAXLEN, num_blocks=1)
    ssept, sasrec = SSEPT(config), SSEPT(replace(config, user_dim=0))
    metrics = Evaluator(split, "test", "full")(recommend.UnknownUser(ssept, "random"))
    assert 0 <= metrics["ndcg@10"] <= metrics["hr@10"] <= 1
    rows = measure_unknown_user({"ssept": ssept, "sasrec": sasrec}, split, protocols=("full",))
    labels = [(r["model"], r["user vector"]) for r in rows]
    assert labels == [("ssept", "own id"), ("ssept", "unknown: mean"), ("ssept", "unknown: random"),
                      ("ssept", "unknown: zero"), ("sasrec", "none (no user part)")]


def test_the_unknown_user_study_left_the_recommend_command() -> None:
    """The measurement is a study of its own; the old subcommand names the new command."""
    with pytest.raises(ConfigError, match=r"is now 'python -m helpers\.studies\.unknown_user'"):
        recommend.main(["measure-unknown-user", "--out", "x.json"])
    assert not hasattr(recommend, "measure_unknown_user") and not hasattr(recommend, "measure_main")


# --------------------------------------------------------------------------- command line, end to end


@pytest.fixture
def converted_run(tmp_path: Path) -> tuple[Path, Path]:
    """A CSV with string ids, converted and trained for one epoch: (dataset file, checkpoint)."""
    shows = ["news", "quiz", "drama", "film", "sport", "kids", "docs"]
    lines = ["viewer,show,ts"]
    for v in range(8):
        for t in range(6):
            lines.append(f"v{v:02d},{shows[(v + 2 * t) % len(shows)]},{100 * v + t}")
    csv = tmp_path / "views.csv"
    csv.write_text("\n".join(lines) + "\n")
    out = convert.write_converted(convert.convert_csv(csv, "viewer", "show", "ts"), tmp_path / "views.txt")
    split = data.leave_one_out(data.load(out))
    config = SSEPTConfig(n_users=split.data.n_users, n_items=split.data.n_items, item_dim=4, user_dim=4,
                         maxlen=MAXLEN, num_blocks=1)
    fit(split, config, TrainConfig(epochs=1, batch_size=4, eval_protocol="full"), tmp_path / "run", progress=False,
        log=lambda _: None)
    return out, tmp_path / "run" / "best.pt"


def test_command_line_user_in_original_ids(converted_run: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    dataset, ckpt = converted_run
    argv = ["--checkpoint", str(ckpt), "--dataset", str(dataset), "--user", "v03", "--k", "3", "--json"]
    assert recommend.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    # v03's six rows are shows[(3 + 2t) % 7], t = 0..5: every show but quiz.
    got = [r["item"] for r in result["recommendations"]]
    assert result["history_length"] == 6 and result["unknown_user"] is None
    assert got == ["quiz"]  # the only show left, in its original id


def test_command_line_items_unknown_user(converted_run: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    dataset, ckpt = converted_run
    argv = ["--checkpoint", str(ckpt), "--dataset", str(dataset), "--items", "news", "quiz", "--k", "10"]
    assert recommend.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("top 5 for an unknown user (mean) after 2 items")
    shown = [line.split()[-1] for line in out[1:]]
    assert sorted(shown) == ["docs", "drama", "film", "kids", "sport"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--items", "news", "opera"], "unknown item 'opera'"),
        (["--user", "v99"], "unknown user 'v99'"),
        (["--items", "news", "--titles"], "--titles needs --dataset ml-1m"),
    ],
)
def test_command_line_errors(converted_run: tuple[Path, Path], capsys: pytest.CaptureFixture, extra: list[str],
                             needle: str) -> None:
    dataset, ckpt = converted_run
    with pytest.raises(SystemExit) as info:
        run_cli(recommend.main, ["--checkpoint", str(ckpt), "--dataset", str(dataset), *extra])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and needle in err and err.count("\n") == 1


def test_command_line_refuses_another_datasets_checkpoint(converted_run: tuple[Path, Path], tiny_file: Path) -> None:
    _, ckpt = converted_run
    with pytest.raises(CheckpointError, match="was trained for 8 users and 7 items"):
        recommend.main(["--checkpoint", str(ckpt), "--dataset", str(tiny_file), "--items", "1"])


# --------------------------------------------------------------------------- the committed ML-1M checkpoints

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.mark.parametrize("name", ["ml1m_ssept.pt", "ml1m_sasrec.pt"])
def test_committed_checkpoints_known_and_unknown_user(name: str, ml1m: data.SequenceData) -> None:
    """User 42 of ML-1M, known and as an unknown history: ten new movies, each answer repeatable."""
    from helpers.model import load_checkpoint

    path = ARTIFACTS / name
    if not path.exists():
        pytest.skip(f"{path.name} is not in artifacts/")
    model, _ = load_checkpoint(path)
    history = ml1m.user_items(42)
    for user in (42, None):
        recs = recommend.recommend(model, history, user=user)
        assert len(recs.items) == 10 and not set(recs.items.tolist()) & set(history.tolist())
        assert np.isfinite(recs.scores).all()
        assert np.array_equal(recs.items, recommend.recommend(model, history, user=user).items)


def test_command_line_titles_for_user_42(ml1m: data.SequenceData, capsys: pytest.CaptureFixture) -> None:
    """The issue's finish line: ten titles for user 42 of ML-1M."""
    path = ARTIFACTS / "ml1m_ssept.pt"
    if not path.exists():
        pytest.skip("ml1m_ssept.pt is not in artifacts/")
    assert recommend.main(["--checkpoint", str(path), "--dataset", "ml-1m", "--user", "42", "--titles"]) == 0
    lines = capsys.readouterr().out.splitlines()
    titles = data.movie_titles()
    assert lines[0].startswith("top 10 for user 42") and len(lines) == 11
    assert all(line.split(maxsplit=3)[3] in titles.values() for line in lines[1:])
