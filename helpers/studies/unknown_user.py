"""How well an unknown user is served: `python -m helpers.studies.unknown_user --out FILE`.

A history without a known user is scored with a stand-in user vector (`helpers.recommend.UnknownUser`,
modes `UNKNOWN_USER_MODES`). This measures, for each checkpoint, NDCG@10, HR@10 and MRR on the test split
with the users' own ids and with each mode, under both protocols, and writes one JSON record
(`artifacts/unknown_user.json`; docs/own_data.md reads it, and it chose `DEFAULT_UNKNOWN_USER`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from helpers.data import Split, leave_one_out, load
from helpers.evaluate import Evaluator, Scorer
from helpers.machine import machine_line
from helpers.model import SSEPT, load_checkpoint
from helpers.recommend import RANDOM_DRAWS, UNKNOWN_USER_MODES, UNKNOWN_USER_STUDY, UnknownUser
from helpers.settings import PROTOCOLS
from helpers.studies.records import timestamp
from helpers.utils import run_cli, write_json


def measure_unknown_user(
    models: dict[str, SSEPT], split: Split, which: str = "test", seed: int = 0, draws: int = RANDOM_DRAWS,
    protocols: Sequence[str] = PROTOCOLS,
) -> list[dict[str, Any]]:
    """NDCG@10, HR@10 and MRR of each model with its users' own ids and with each unknown-user mode.

    A SASRec model (no user part) gets one row per protocol: its user ids are never used.
    """
    evaluators = {p: Evaluator(split, which, p, seed) for p in protocols}
    rows = []
    for name, model in models.items():
        variants: dict[str, Scorer] = {"own id": model}
        if model.user_emb is not None:
            variants |= {f"unknown: {m}": UnknownUser(model, m, draws) for m in UNKNOWN_USER_MODES}
        else:
            variants = {"none (no user part)": model}
        for label, scorer in variants.items():
            for protocol, evaluator in evaluators.items():
                t0 = time.perf_counter()
                metrics = evaluator(scorer)
                rows.append({"model": name, "user vector": label, "protocol": protocol,
                             **{key: metrics[key] for key in ("ndcg@10", "hr@10", "mrr", "users")},
                             "seconds": round(time.perf_counter() - t0, 2)})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Write the unknown-user table of ML-1M checkpoints as JSON (and print it)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog=UNKNOWN_USER_STUDY, description=measure_unknown_user.__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", nargs="+", default=["artifacts/ml1m_ssept.pt",
                        "artifacts/ml1m_ssept_faithful.pt", "artifacts/ml1m_sasrec.pt"])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--draws", type=int, default=RANDOM_DRAWS, help="users averaged by the 'random' mode")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled negatives")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    split = leave_one_out(load(args.dataset))
    models = {path: load_checkpoint(path, "cpu")[0] for path in args.checkpoints}
    t0 = time.time()
    rows = measure_unknown_user(models, split, "test", args.seed, args.draws)
    record = {
        "command": " ".join([UNKNOWN_USER_STUDY, *argv]),
        "machine": f"{machine_line()}, {torch.get_num_threads()} torch threads, no GPU used",
        "note": "seconds: wall time of each row on a CPU shared with other jobs, so they vary between runs",
        "torch": torch.__version__, "date": timestamp(),
        "dataset": args.dataset, "split": "test", "seed": args.seed, "random_draws": args.draws,
        "wall_seconds": round(time.time() - t0, 1), "rows": rows,
    }
    write_json(args.out, record)
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    run_cli(main)
