"""The scale study (helpers.studies.scale) and its synthetic data (helpers.studies.synthetic): data of a stated
shape, one measured point, the plans, the benchmark, the report and the command line."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.convert import write_pairs
from helpers.data import leave_one_out, load
from helpers.errors import ConfigError
from helpers.machine import machine
from helpers.sampler import TrainSampler
from helpers.studies import synthetic
from helpers.studies.scale import cli, measure, memory, plans, report, runner
from helpers.studies.scale.plans import Point, point_shape
from helpers.studies.synthetic import Shape

SMALL = Shape("small", n_users=50, n_items=300, n_rows=2_000, min_len=5)


def test_synthetic_data_has_the_stated_shape() -> None:
    data = synthetic.synthesize(SMALL)
    lengths = data.lengths[1 : data.n_users + 1]
    assert (data.n_users, data.n_items, data.n_rows) == (50, 300, 2_000)
    assert lengths.sum() == 2_000 and lengths.min() >= 5
    assert np.array_equal(np.unique(data.items), np.arange(1, 301))  # every item id present


def test_items_need_not_all_occur_but_the_catalogue_keeps_its_size() -> None:
    shape = replace(SMALL, n_items=5_000, every_item=False)  # fewer rows than items: allowed here
    data = synthetic.synthesize(shape)
    assert data.n_items == 5_000 and data.n_rows == 2_000
    assert np.unique(data.items).size < 2_000


def test_synthetic_data_is_seeded() -> None:
    a, b = synthetic.synthesize(SMALL), synthetic.synthesize(SMALL)
    other = synthetic.synthesize(replace(SMALL, seed=1))
    assert np.array_equal(a.items, b.items) and np.array_equal(a.offsets, b.offsets)
    assert not np.array_equal(a.items, other.items)


def test_popularity_falls_with_the_item_id() -> None:
    items = synthetic.zipf_items(1_000, 0.8, 200_000, np.random.default_rng(0))
    counts = np.bincount(items, minlength=1_001)[1:]
    assert items.min() >= 1 and items.max() <= 1_000
    # p(1) / p(10) = 10^0.8 = 6.3 for the exponent 0.8
    assert counts[0] / counts[9] == pytest.approx(10**0.8, rel=0.1)
    assert counts[:100].sum() > counts[100:200].sum() > counts[900:].sum()


def test_lengths_sum_exactly_with_a_long_tail() -> None:
    shape = Shape("lengths", n_users=2_000, n_items=10, n_rows=300_000, min_len=20, sigma=1.3)
    lengths = synthetic.user_lengths(shape, np.random.default_rng(0))
    assert lengths.sum() == shape.n_rows and lengths.min() >= 20
    assert np.median(lengths) < lengths.mean() / 1.5  # skewed: a few long histories


@pytest.mark.parametrize("kw, why", [
    ({"n_rows": 100}, "cannot give"),  # 50 users x 5 rows need 250
    ({"n_items": 5_000, "n_rows": 2_000}, "each of"),  # every item once needs 5,000 rows
])
def test_impossible_shapes_are_refused(kw: dict, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        replace(SMALL, **kw)


def test_written_file_reads_back_as_the_same_data(tmp_path: Path) -> None:
    data = synthetic.synthesize(SMALL)
    back = load(write_pairs(data, tmp_path / "small.txt"))
    assert (back.n_users, back.n_items) == (data.n_users, data.n_items)
    assert np.array_equal(back.items, data.items) and np.array_equal(back.offsets, data.offsets)


def test_cache_gives_the_synthesized_data(tmp_path: Path) -> None:
    first = synthetic.cached(SMALL, tmp_path)
    again = synthetic.cached(SMALL, tmp_path)
    assert (tmp_path / f"{SMALL.key}.npz").exists()
    for d in (first, again):
        assert np.array_equal(d.items, synthetic.synthesize(SMALL).items)


def test_named_shapes() -> None:
    ml20m = synthetic.SHAPES["ml-20m"]
    assert (ml20m.n_users, ml20m.n_items, ml20m.n_rows) == (138_493, 27_278, 20_000_263)
    assert synthetic.SHAPES["1m-items"].n_items == 1_000_000


def test_point_shapes_change_users_or_items_only() -> None:
    base = synthetic.SHAPES["ml-20m"]
    fewer = point_shape(Point(users=base.n_users // 2))
    assert fewer.n_items == base.n_items and fewer.n_rows == pytest.approx(base.n_rows / 2, rel=1e-4)
    more = point_shape(Point(items=1_000_000))
    assert (more.n_users, more.n_rows, more.n_items) == (base.n_users, base.n_rows, 1_000_000)


def test_ce_memory_prediction_inverts_the_measured_factor() -> None:
    predicted = memory.predict_ce_mb(1_000.0, positions=8_000, n_items=27_278, factor=3.0)
    assert predicted == pytest.approx(1_000 + 3 * 8_000 * 27_278 * 4 / 2**20)
    assert memory.ce_factor(predicted, 1_000.0, 8_000, 27_278) == pytest.approx(3.0)


def test_full_ce_that_would_not_fit_is_skipped() -> None:
    bce = {"point": {"loss": "bce", "shape": "ml-20m", "items": 1_000_000, "maxlen": 200, "procs": 1},
           "phase_peak_rss_mb": 2_000.0, "max_piece_positions": 8_000}
    point = Point(items=1_000_000, loss="ce")
    why = memory.ce_skip(point, point_shape(point), [bce])
    assert why is not None and "1,000,000 items" in why
    assert memory.ce_skip(Point(items=1_000_000), point_shape(point), [bce]) is None  # not CE


@pytest.fixture
def tiny_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(synthetic, "CACHE", tmp_path)
    return tmp_path


@pytest.mark.parametrize("kw", [{}, {"mode": "eval"}])
def test_one_point_in_this_process(tiny_cache: Path, kw: dict) -> None:
    point = Point(shape="tiny", batches=2, warmup=1, batch_size=16, maxlen=20, eval_users=20, **kw)
    row = measure.run_point(point)
    assert row["world"] == 1 and row["peak_rss_mb"] > 0
    if kw:
        assert row["eval_users_timed"] == 20 and row["eval_seconds"] > 0
    else:
        assert row["timed_batches"] == 2 and row["timed_sequences"] == 32 and row["seconds_per_batch"] > 0
        assert 0 < row["max_piece_positions"] <= 16 * 20


def test_bench_measures_a_point_in_a_subprocess(tiny_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    point = Point(shape="tiny", batches=2, warmup=1, batch_size=16, maxlen=20)
    result = runner.bench([point], out, timeout=300, log=lambda _: None)
    record = json.loads(out.read_text())["points"][0]
    assert record == json.loads(json.dumps(result["points"][0]))
    assert "error" not in record, record.get("error")
    assert record["command"].startswith("python -m helpers.studies.scale point")
    assert len(record["load_before"]) == 3 and record["peak_rss_mb_per_rank"]
    split = leave_one_out(synthetic.cached(point_shape(point)))
    assert record["train_users"] == int((split.train_len >= 2).sum())
    assert record["epoch_seconds_extrapolated"] == pytest.approx(
        record["train_users"] / record["sequences_per_s"])
    assert result["machine"]["cpu"]


def test_plans_name_valid_points() -> None:
    for name in ("tiny", "recorded", "layouts"):
        points = plans.plan(name)
        assert points and all(p.label for p in points)
        assert len({p.label for p in points}) == len(points)  # labels name the record files
        for p in points:
            point_shape(p)
    with pytest.raises(ValueError):
        plans.plan("nope")


def test_bench_resumes_without_measuring_again(tiny_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    first = Point(shape="tiny", batches=1, warmup=0, batch_size=16, maxlen=20)
    second = replace(first, maxlen=10)
    runner.bench([first], out, timeout=300, log=lambda _: None, command="one")
    kept = json.loads(out.read_text())["points"][0]
    result = runner.bench([first, second], out, timeout=300, log=lambda _: None, command="two", resume=True)
    assert [r["label"] for r in result["points"]] == [first.label, second.label]
    assert result["points"][0] == kept  # not measured again
    assert result["commands"] == ["one", "two"]


def _fake_record(point: Point, seconds: float) -> dict:
    """A record shaped like `measure`'s (made-up numbers: only the tables' and the figure's layout is tested)."""
    return {"label": point.label, "point": asdict(point), "shape": asdict(point_shape(point)),
            "load_before": [1.0, 1.0, 1.0], "busy_before": [], "peak_rss_mb": 900.0, "phase_peak_rss_mb": 800.0,
            "phase_peak_rss_mb_per_rank": [800.0] * point.procs, "seconds_per_batch": seconds,
            "cpu_seconds_per_batch": seconds, "sequences_per_s": 128 / seconds,
            "cpu_seconds_per_sequence": seconds / 128, "train_users": 1_000,
            "epoch_seconds_extrapolated": 1_000 * seconds, "eval_users_timed": 10, "eval_seconds_per_user": 0.01,
            "eval_cpu_seconds_per_user": 0.01, "eval_seconds_extrapolated": 60.0}


def test_markdown_and_figure_from_records(tmp_path: Path) -> None:
    points = plans.plan("recorded")
    result = {"machine": machine(), "points": [_fake_record(p, 0.1 + i / 100) for i, p in enumerate(points)]}
    result["points"][-1] = {**result["points"][-1], "skipped": "would not fit"}
    text = report.markdown(result)
    assert points[0].label in text and "would not fit" in text and text.count("\n|") > len(points)
    losses = pd.DataFrame([{"variant": "bce", "seed": 0, "seconds_per_epoch": 5.0, "test_full_ndcg@10": 0.1,
                                  "epochs_done": 10}])
    fig = report.draw(result, losses)
    fig.canvas.draw()
    for ax in fig.axes:  # every legend below its panel, off the data
        if ax.get_legend() is not None:
            legend, box = ax.get_legend().get_window_extent(), ax.get_window_extent()
            assert legend.y1 <= box.y0, ax.get_title()
    path = report.figure(result, losses, tmp_path / "scale.png")
    assert path.stat().st_size > 10_000


def test_the_recording_sampler_hands_out_the_same_batches_and_keeps_their_lengths() -> None:
    split = leave_one_out(synthetic.synthesize(SMALL))
    plain = TrainSampler(split, 16, 20, np.random.default_rng(0))
    recording = measure.RecordingSampler(TrainSampler(split, 16, 20, np.random.default_rng(0)))
    recording.users = plain.users = plain.users[:40]
    assert len(recording) == len(plain) == 3
    for (a, pa), (b, pb) in zip(plain.shares(), recording.shares(), strict=True):
        assert pa == pb and np.array_equal(a.seq, b.seq) and np.array_equal(a.neg, b.neg)
    assert [x.sum() for x in recording.lengths] == [b.n_positions for b in
                                                    TrainSampler(split, 16, 20, np.random.default_rng(0),
                                                                 users=plain.users).epoch()]


def test_a_moved_subcommand_names_its_new_command() -> None:
    with pytest.raises(ConfigError, match="helpers.studies.loss_compare commands --seeds 0"):
        cli.main(["losses", "commands", "--seeds", "0"])


def test_make_writes_a_file_that_reads_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["make", "--shape", "tiny", "--out", str(tmp_path / "tiny.txt")]) == 0
    printed = json.loads(capsys.readouterr().out)
    back = load(tmp_path / "tiny.txt")
    assert printed["shape"]["name"] == "tiny" and back.n_rows == synthetic.SHAPES["tiny"].n_rows
