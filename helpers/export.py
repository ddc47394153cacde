"""A trained model as an ONNX file for a service, and the check that ONNX Runtime ranks as torch does.

`export(checkpoint, out)` writes a graph from a batch of users and item windows to their top k:

    inputs   user    int64 (B,)     the user ids (SASRec ignores them)
             window  int64 (B, L)   the last items of each history, oldest first, left-padded with 0, 1 <= L <= maxlen
    outputs  items   int64 (B, k)   best first; never padding, nor an item of the window unless keep_seen
             scores  float32 (B, k)

or, with `output="scores"`, one output `scores` float32 (B, n_items + 1) over every item id (column 0, padding, is
-inf). B and L are dynamic. The graph is the model's own `predict` (copy bonus included where the checkpoint has
one) traced by `torch.onnx.export`'s dynamo path; equal scores rank the smaller item id first (ONNX TopK's rule,
and `helpers.recommend`'s). The file's metadata names k, the output, maxlen, the catalogue and the checkpoint's
digest (`metadata`).

`agreement(model, path, data)` runs the file in ONNX Runtime on every user's window and compares it with torch:
the largest score difference against the scores' size, and each user's top k against
`helpers.recommend.recommend(model, window, user, k)`, a differing user counted as a near-tie when every rank's
two items score within the tolerance in torch.

onnx, onnxscript and onnxruntime are the optional `[serve]` extra; without them this module imports, and
`export`/`agreement` fail in one line naming it.

Command line: `python -m helpers.export --checkpoint CKPT --out model.onnx [--k 10] [--scores] [--keep-seen]
[--check DATASET] [--record FILE]`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from helpers.batch import file_digest, users_with_rows
from helpers.checkpoint import OTHER_DATA_FLAG, check_data
from helpers.data import SequenceData, load
from helpers.errors import CheckpointError, ConfigError
from helpers.history import gather_windows
from helpers.model import SSEPT, load_checkpoint
from helpers.recommend import recommend
from helpers.utils import atomic_write, relative, run_cli, write_json

#: What to install for export and ONNX Runtime, in the one-line error given without it.
SERVE_HINT = "pip install 'ssept-pytorch[serve]' (the serve extra: onnx, onnxscript, onnxruntime)"
OUTPUTS = ("topk", "scores")
INPUT_NAMES = ("user", "window")
#: Relative tolerance of ONNX Runtime's scores against torch's, scaled by the largest |score| of each batch:
#: float32 kernels that add in another order differ by a few units in the 7th digit.
SCORE_RTOL = 1e-5
#: Users per ONNX Runtime call in `agreement`.
CHECK_BATCH = 256


def require(module: str) -> Any:
    """Import one of the `[serve]` extra's packages, or fail in one line naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{module} is not installed: {SERVE_HINT}") from None


class ServingGraph(nn.Module):
    """What the ONNX file computes: (user, window) to the top k items and scores, or to every item's score."""

    def __init__(self, model: SSEPT, k: int = 10, output: str = "topk", keep_seen: bool = False) -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ConfigError(f"output must be one of {OUTPUTS}, got {output!r}")
        n_items = model.config.n_items
        if output == "topk" and not 1 <= k < n_items - (0 if keep_seen else model.maxlen - 1):
            raise ConfigError(f"k {k} must be at least 1 and below the number of items ({n_items}) less a "
                              f"window's ({model.maxlen}) when the window's items are excluded")
        self.model, self.k, self.output, self.keep_seen = model.eval(), k, output, keep_seen

    def forward(self, users: torch.Tensor, windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(items, scores) of the top k, or (scores,) over every item id."""
        scores = self.model.predict(users, windows, None)
        if self.output == "scores":
            return (scores,)
        if not self.keep_seen:
            scores = scores.scatter(1, windows, float("-inf"))  # the window's items, and padding (id 0)
        top = scores.topk(self.k, dim=1)
        return top.indices, top.values


def metadata(model: SSEPT, graph: ServingGraph, checkpoint: str | Path) -> dict[str, str]:
    """What the file says about itself (ONNX metadata_props)."""
    config = model.config
    return {"producer": "ssept-pytorch helpers.export", "output": graph.output, "k": str(graph.k),
            "keep_seen": str(graph.keep_seen).lower(), "maxlen": str(config.maxlen), "n_items": str(config.n_items),
            "n_users": str(config.n_users), "user_part": str(bool(config.user_dim)).lower(),
            "copy_bonus": str(bool(config.copy_slots)).lower(), "checkpoint_digest": file_digest(checkpoint)}


def _example(model: SSEPT) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of 2 full windows to trace with (any ids: the shapes are what matters)."""
    n_items, maxlen = model.config.n_items, model.maxlen
    window = (torch.arange(2 * maxlen).reshape(2, maxlen) % n_items) + 1
    return torch.tensor([1, min(2, model.config.n_users)]), window


def to_onnx(graph: ServingGraph) -> Any:
    """The ONNX model (`onnx.ModelProto`) of `graph`, batch and window width dynamic; one-line error naming
    what the exporter could not express."""
    require("onnx")
    require("onnxscript")
    batch = torch.export.Dim("batch")
    width = torch.export.Dim("width", min=1, max=graph.model.maxlen)
    output_names = ["items", "scores"] if graph.output == "topk" else ["scores"]
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # the exporter's own notes and progress lines: not the user's output
            program = torch.onnx.export(graph, _example(graph.model), dynamo=True, verbose=False, report=False,
                                        input_names=list(INPUT_NAMES), output_names=output_names,
                                        dynamic_shapes=({0: batch}, {0: batch, 1: width}))
    except Exception as err:  # the exporter raises many types; its first line names the op or constraint
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ConfigError(f"torch.onnx.export could not express the model ({type(err).__name__}: {first[:300]})"
                          ) from None
    return program.model_proto


def export(checkpoint: str | Path, out: str | Path, k: int = 10, output: str = "topk",
           keep_seen: bool = False) -> dict[str, Any]:
    """Write the ONNX file of `checkpoint` to `out` (atomically); return what was written."""
    model, _ = load_checkpoint(checkpoint)
    graph = ServingGraph(model, k, output, keep_seen)
    t0 = time.perf_counter()
    proto = to_onnx(graph)
    onnx = require("onnx")
    for key, value in metadata(model, graph, checkpoint).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as err:
        raise CheckpointError(f"{checkpoint}: the exported graph is not valid ONNX ({str(err).splitlines()[0]})"
                              ) from None
    body = proto.SerializeToString()
    atomic_write(out, lambda f: f.write(body))
    return {"out": relative(out), "bytes": len(body), "output": output, "k": k, "keep_seen": keep_seen,
            "seconds": round(time.perf_counter() - t0, 1)}


def session(path: str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime session on the CPU (`threads`: intra-op threads; default ONNX Runtime's choice)."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def windows_of(data: SequenceData, users: np.ndarray, width: int) -> np.ndarray:
    """Each user's last `width` items, left-padded with 0: the `window` input."""
    start, end = data.offsets[users], data.offsets[users + 1]
    return gather_windows(data.items, start, end, width)


def _batches(users: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for lo in range(0, users.size, size):
        yield users[lo:lo + size]


@torch.no_grad()
def agreement(model: SSEPT, topk_path: str | Path, scores_path: str | Path, data: SequenceData, k: int = 10,
              users: np.ndarray | None = None, keep_seen: bool = False, rtol: float = SCORE_RTOL) -> dict[str, Any]:
    """ONNX Runtime against torch on every user's window (the last `maxlen` items, padded to `maxlen`).

    Scores: the scores graph's largest |difference| with `predict`'s, and that over the largest |score|.
    Rankings: the top-k graph's items against `recommend(model, window, user, k)` per user; a user whose lists
    differ is a near-tie when, at every rank, torch scores the two items within `rtol` x the largest |score|.
    """
    users = users_with_rows(data) if users is None else users
    top, every = session(topk_path), session(scores_path)
    worst = scale = 0.0
    same = near = 0
    mismatched: list[int] = []
    largest_gap = 0.0
    for chunk in _batches(users, CHECK_BATCH):
        window = windows_of(data, chunk, model.maxlen)
        feed = {"user": chunk.astype(np.int64), "window": window.astype(np.int64)}
        reference = model.predict(torch.from_numpy(chunk), torch.from_numpy(window), None).numpy()
        got = every.run(None, feed)[0]
        finite = np.isfinite(reference)
        if not np.array_equal(finite, np.isfinite(got)):
            raise ConfigError("ONNX Runtime's scores are non-finite where torch's are not")
        worst = max(worst, float(np.abs(got[finite] - reference[finite]).max()))
        scale = max(scale, float(np.abs(reference[finite]).max()))
        items, _ = top.run(None, feed)
        for row, user in enumerate(chunk.tolist()):
            history = window[row][window[row] > 0]
            expected = recommend(model, history, user, k, allow_repeats=keep_seen).items
            if np.array_equal(items[row], expected):
                same += 1
                continue
            gap = float(np.abs(reference[row, items[row]] - reference[row, expected]).max())
            largest_gap = max(largest_gap, gap)
            if gap <= rtol * float(np.abs(reference[row][finite[row]]).max()):
                near += 1
            else:
                mismatched.append(user)
    return {"users": int(users.size), "k": k, "max_abs_score_diff": worst, "max_abs_score": scale,
            "max_diff_over_max_score": worst / scale if scale else math.nan, "rtol": rtol,
            "same_top_k": same, "near_ties": near, "near_tie_largest_gap": largest_gap,
            "mismatched_users": mismatched[:20], "mismatched": len(mismatched)}


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers.export", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint file (.pt)")
    parser.add_argument("--out", required=True, help="the ONNX file to write")
    parser.add_argument("--k", type=int, default=10, help="items per user in the top-k graph (default 10)")
    parser.add_argument("--scores", action="store_true", help="output every item's score instead of the top k")
    parser.add_argument("--keep-seen", action="store_true", help="top k may hold items of the window")
    parser.add_argument("--check", metavar="DATASET",
                        help="then compare ONNX Runtime with torch on every user of DATASET (e.g. ml-1m)")
    parser.add_argument("--record", help="with --check: write the comparison to this JSON file")
    parser.add_argument(OTHER_DATA_FLAG, action="store_true", help="with --check: data other than the training data")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Export a checkpoint to ONNX; with --check, compare ONNX Runtime with torch on a dataset."""
    args = _parser().parse_args(argv)
    output = "scores" if args.scores else "topk"
    if args.record and not args.check:
        raise ConfigError("--record goes with --check DATASET")
    data = None
    if args.check:  # before writing anything: the data must fit the checkpoint
        model, ckpt = load_checkpoint(args.checkpoint)
        data = load(args.check)
        if (model.config.n_users, model.config.n_items) != (data.n_users, data.n_items):
            raise CheckpointError(f"{args.checkpoint} was trained for {model.config.n_users} users and "
                                  f"{model.config.n_items} items, but {args.check!r} has {data.n_users} and "
                                  f"{data.n_items}")
        check_data(ckpt, data, args.checkpoint, args.check, args.allow_other_data)
    written = export(args.checkpoint, args.out, args.k, output, args.keep_seen)
    result: dict[str, Any] = {"checkpoint": args.checkpoint, **written}
    if data is not None:
        other = Path(args.out).with_name(Path(args.out).stem + (".topk.onnx" if args.scores else ".scores.onnx"))
        export(args.checkpoint, other, args.k, "topk" if args.scores else "scores", args.keep_seen)
        paths = (other, args.out) if args.scores else (args.out, other)
        result["check"] = {"dataset": args.check, **agreement(model, *paths, data, args.k, keep_seen=args.keep_seen)}
        if args.record:
            write_json(args.record, result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    run_cli(main)
