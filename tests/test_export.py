"""ONNX export (`helpers.export`) on tiny models: ONNX Runtime ranks as torch does (SSE-PT with a copy bonus, and
SASRec), for any batch size and window width; the service example of docs/serving.md runs; a checkpoint that
cannot be exported, and a machine without the [serve] extra, fail in one line."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import export, recommend
from helpers.errors import CheckpointError, ConfigError
from helpers.utils import run_cli
from tests.test_batch import N_ITEMS, tiny_data, tiny_model, write_checkpoint

ROOT = Path(__file__).resolve().parents[1]
K = 4


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """Each model's checkpoint and its ONNX files: SSE-PT with a copy bonus (top k and every score), SASRec (top k)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    tmp = tmp_path_factory.mktemp("onnx")
    models = {"ssept-copy": tiny_model(copy_slots=3), "sasrec": tiny_model(user_dim=0, seed=1)}
    found = {}
    for name, model in models.items():
        ckpt = write_checkpoint(model, tiny_data(), tmp / f"{name}.pt")
        top = tmp / f"{name}.onnx"
        assert export.export(ckpt, top, k=K)["bytes"] == top.stat().st_size
        scores = None
        if name == "ssept-copy":
            scores = tmp / f"{name}.scores.onnx"
            export.export(ckpt, scores, output="scores")
        found[name] = (model, ckpt, top, scores)
    return found


def test_onnx_runtime_top_k_equals_torch(exported: dict[str, tuple]) -> None:
    """Every user's window, and batches of 1, 3 and 8 windows of widths 1, 3 and maxlen."""
    dataset = tiny_data()
    for name, (model, _, top, _) in exported.items():
        run = export.session(top, threads=1)
        users = np.arange(1, 9)
        for width in (1, 3, model.maxlen):
            for size in (1, 3, 8):
                chunk = users[:size]
                window = export.windows_of(dataset, chunk, width)
                items, scores = run.run(None, {"user": chunk, "window": window})
                assert items.shape == scores.shape == (size, K)
                for row, user in enumerate(chunk):
                    history = window[row][window[row] > 0]
                    if history.size == 0:  # user 4 has no rows: nothing to recommend after
                        continue
                    recs = recommend.recommend(model, history, int(user), K)
                    assert items[row].tolist() == recs.items.tolist(), (name, width, size, user)
                    torch.testing.assert_close(torch.from_numpy(scores[row]), torch.from_numpy(recs.scores),
                                               rtol=1e-5, atol=1e-5 * float(np.abs(recs.scores).max()))


def test_scores_graph_and_agreement_record(exported: dict[str, tuple]) -> None:
    model, _, top, every = exported["ssept-copy"]
    dataset = tiny_data()
    users = np.array([1, 2, 3, 5, 6, 7, 8, 9])
    result = export.agreement(model, top, every, dataset, K, users=users)
    assert result["users"] == 8 and result["same_top_k"] + result["near_ties"] == 8 and result["mismatched"] == 0
    assert result["max_diff_over_max_score"] <= export.SCORE_RTOL
    window = export.windows_of(dataset, users, model.maxlen)
    (scores,) = export.session(every).run(None, {"user": users, "window": window})
    assert scores.shape == (8, N_ITEMS + 1) and np.isneginf(scores[:, 0]).all()
    meta = export.session(top).get_modelmeta().custom_metadata_map
    assert meta["k"] == str(K) and meta["maxlen"] == str(model.maxlen) and meta["copy_bonus"] == "true"


def service_example() -> str:
    """The Python block under docs/serving.md's heading on loading the file in a service."""
    text = (ROOT / "docs" / "serving.md").read_text()
    section = text.split("## Load the ONNX file in a service", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_guides_service_example_runs(exported: dict[str, tuple], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture) -> None:
    model, _, top, _ = exported["ssept-copy"]
    (tmp_path / "model.onnx").write_bytes(top.read_bytes())
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(service_example(), "docs/serving.md", "exec"), namespace)  # noqa: S102 - the guide's own code
    items, scores = namespace["items"], namespace["scores"]
    expected = recommend.recommend(model, namespace["history"], namespace["user"], K)
    assert items.tolist() == expected.items.tolist()
    np.testing.assert_allclose(scores, expected.scores, rtol=1e-5, atol=1e-5 * float(np.abs(expected.scores).max()))
    assert capsys.readouterr().out.strip()


def test_command_line_and_cannot_export(exported: dict[str, tuple], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture) -> None:
    _, ckpt, _, _ = exported["sasrec"]
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    for argv, needle, kind in (
        (["--checkpoint", str(broken), "--out", str(tmp_path / "b.onnx")], "not a readable checkpoint",
         CheckpointError),
        (["--checkpoint", str(ckpt), "--out", str(tmp_path / "b.onnx"), "--k", str(N_ITEMS)], "k 15 must be",
         ConfigError),
    ):
        with pytest.raises(kind, match=needle):
            export.main(argv)

    def cannot(*args: object, **kwargs: object) -> None:
        raise RuntimeError("No decompositions registered for aten.searchsorted.Tensor\nand more lines")

    monkeypatch.setattr(torch.onnx, "export", cannot)
    with pytest.raises(SystemExit):
        run_cli(export.main, ["--checkpoint", str(ckpt), "--out", str(tmp_path / "c.onnx")])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not express the model (RuntimeError: No decompositions registered" in err
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*.tmp"))


def test_without_the_serve_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The module imports without onnx; using it names the extra in one line."""
    for name in ("onnx", "onnxscript", "onnxruntime"):
        monkeypatch.setitem(sys.modules, name, None)
    model = tiny_model()
    ckpt = write_checkpoint(model, tiny_data(), tmp_path / "m.pt")
    with pytest.raises(ConfigError, match=r"onnx is not installed: pip install 'ssept-pytorch\[serve\]'"):
        export.export(ckpt, tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match=r"onnxruntime is not installed: .*\[serve\]"):
        export.session(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
