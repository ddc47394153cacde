"""Do two runs of the same settings agree? `python -m helpers.studies.agreement A B --out FILE`.

The multi-process path is checked on a GPU by training one epoch twice with the same seed: once as a
plain process and once under `torchrun --nproc_per_node 1` (NCCL). With one process the two must give
the same losses and metrics up to float rounding (the kernels may differ between runs on a GPU). This
reads both run folders' histories and records, per epoch, every metric of each and the largest gap.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from helpers.errors import ConfigError
from helpers.runs import RunFolder
from helpers.studies.records import timestamp
from helpers.utils import run_cli, write_json

#: Columns compared: the training loss and every evaluation metric (times are not compared).
COMPARED = ("loss", "valid_ndcg@10", "valid_hr@10", "valid_mrr", "test_ndcg@10", "test_hr@10", "test_mrr")
#: Largest gap counted as agreement: float rounding of one epoch, far below a metric's seed-to-seed spread.
TOLERANCE = 1e-3


def _history(folder: str | Path) -> pd.DataFrame:
    history = RunFolder(folder).history
    if not history.exists():
        raise ConfigError(f"no history.csv in {folder}: the run did not finish an epoch")
    return pd.read_csv(history)


def agreement(first: str | Path, second: str | Path, tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Both runs' metrics epoch by epoch, the largest absolute gap over them, and whether it is within
    `tolerance`. Epochs only one of the runs reached are left out."""
    a, b = _history(first), _history(second)
    common = sorted(set(a["epoch"]) & set(b["epoch"]))
    if not common:
        raise ConfigError(f"{first} and {second} share no finished epoch")
    columns = [c for c in COMPARED if c in a.columns and c in b.columns]
    a, b = a.set_index("epoch").loc[common, columns], b.set_index("epoch").loc[common, columns]
    gap = (a - b).abs().max().max()
    return {
        "first": str(first), "second": str(second), "epochs": [int(e) for e in common],
        "first_metrics": a.reset_index().to_dict("records"), "second_metrics": b.reset_index().to_dict("records"),
        "max_abs_gap": float(gap), "tolerance": tolerance, "agree": bool(gap <= tolerance),
        "date": timestamp(),
    }


def main(argv: list[str] | None = None) -> int:
    """Write the agreement record of two run folders as JSON and print its headline."""
    parser = argparse.ArgumentParser(prog="python -m helpers.studies.agreement", description=__doc__.splitlines()[0])
    parser.add_argument("first", help="a run folder")
    parser.add_argument("second", help="the run folder to compare it with")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest absolute gap that counts as equal")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--note", default="", help="what the two runs were (stored in the record)")
    args = parser.parse_args(argv)
    record = agreement(args.first, args.second, args.tolerance) | {"note": args.note}
    write_json(Path(args.out), record)
    print(f"{args.first} vs {args.second}: epochs {record['epochs']}, largest gap {record['max_abs_gap']:.2e}; "
          f"agree within {args.tolerance}: {record['agree']}")
    return 0


if __name__ == "__main__":
    run_cli(main)
