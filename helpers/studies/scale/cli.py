"""`python -m helpers.studies.scale SUBCOMMAND`: one function per subcommand (`make`, `point`, `bench`, `accept`,
`markdown`, `figure`); `main` parses the command line and calls it."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from helpers.convert import write_pairs
from helpers.errors import ConfigError
from helpers.studies.scale.accept import accept as run_accept
from helpers.studies.scale.accept import resolve
from helpers.studies.scale.plans import Point, plan
from helpers.studies.scale.report import figure as draw_figure
from helpers.studies.scale.report import markdown as tables
from helpers.studies.scale.runner import bench as run_bench
from helpers.studies.scale.runner import table
from helpers.studies.synthetic import SHAPES, describe, synthesize
from helpers.utils import write_json

PROG = "python -m helpers.studies.scale"
#: Subcommands that became commands of their own: the old name -> the new command.
MOVED = {"losses": "python -m helpers.studies.loss_compare"}


def make(args: argparse.Namespace) -> int:
    """Write a synthetic shape as a `user item` file and print what it holds."""
    shape = replace(SHAPES[args.shape], seed=args.seed)
    data = synthesize(shape)
    path = write_pairs(data, args.out)
    print(json.dumps({"out": str(path), "shape": asdict(shape), **describe(data)}))
    return 0


def point(args: argparse.Namespace) -> int:
    """Measure one point in this process; each rank writes OUT-STEM.rankR.json."""
    from helpers.studies.scale.measure import run_point

    record = run_point(Point(**json.loads(args.json)))
    out = Path(args.out)
    write_json(out.with_name(f"{out.stem}.rank{record['rank']}.json"), record, indent=None)
    return 0


def bench(args: argparse.Namespace, argv: list[str]) -> int:
    """Measure a plan's points, each in fresh processes, and print the table of their headline numbers."""
    points = plan(args.plan)
    if args.only is not None:
        points = [points[int(i)] for i in args.only]
    command = shlex.join(["python", "-m", "helpers.studies.scale", *argv])
    result = run_bench(points, Path(args.out), args.timeout, command=command, wait_quiet=args.wait_quiet,
                       resume=args.resume)
    print(table(result).to_string())
    return 0


def accept(args: argparse.Namespace) -> int:
    """Run the command after `--` and record its time, peak memory and printed result; exit with its code."""
    given = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    record = run_accept(args.name, resolve(given), Path(args.out), args.threads, shown=shlex.join(given))
    print(json.dumps({k: record[k] for k in ("command", "exit_code", "wall_seconds",
                                               "peak_rss_mb_largest_process", "result")}))
    return record["exit_code"]


def markdown(args: argparse.Namespace) -> int:
    """Print the benchmark's records as Markdown tables."""
    print(tables(json.loads(Path(args.json).read_text())))
    return 0


def figure(args: argparse.Namespace) -> int:
    """Draw the scale figure from the benchmark's JSON and, where it exists, the loss comparison's CSV."""
    losses = pd.read_csv(args.losses) if Path(args.losses).exists() else None
    print(draw_figure(json.loads(Path(args.json).read_text()), losses, Path(args.out)))
    return 0


def parser() -> argparse.ArgumentParser:
    """The command line of every subcommand."""
    top = argparse.ArgumentParser(prog=PROG, description="How the cost grows: synthetic data at scale and a "
                                                         "benchmark of one point per process.")
    sub = top.add_subparsers(dest="command", required=True)
    make_ = sub.add_parser("make", help="write a synthetic dataset as a 'user item' file")
    make_.add_argument("--shape", choices=sorted(SHAPES), required=True)
    make_.add_argument("--seed", type=int, default=0)
    make_.add_argument("--out", required=True)
    one = sub.add_parser("point", help="measure one configuration in this process (what bench runs)")
    one.add_argument("--json", required=True, help="the Point as JSON")
    one.add_argument("--out", required=True, help="record file; each rank writes OUT-STEM.rankR.json")
    run = sub.add_parser("bench", help="measure a plan's points, each in fresh processes")
    run.add_argument("--plan", default="recorded", choices=("recorded", "layouts", "tiny"))
    run.add_argument("--only", nargs="*", default=None, help="indices into the plan to run (default: all)")
    run.add_argument("--timeout", type=float, default=900.0, help="seconds per point")
    run.add_argument("--out", default="artifacts/scale.json")
    run.add_argument("--resume", action="store_true", help="keep the records in --out, measure the other points")
    run.add_argument("--wait-quiet", type=float, default=0.0,
                     help="before each point, wait up to this many seconds for other busy processes (nice < 10)")
    check = sub.add_parser("accept", help="run a command and record its time, peak memory and printed result")
    check.add_argument("--name", required=True)
    check.add_argument("--out", default="artifacts/scale_acceptance.json")
    check.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the command")
    check.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, after --")
    md = sub.add_parser("markdown", help="print the benchmark's records as Markdown tables")
    md.add_argument("--json", default="artifacts/scale.json")
    fig = sub.add_parser("figure", help="draw the scale figure from the benchmark's JSON and the loss CSV")
    fig.add_argument("--json", default="artifacts/scale.json")
    fig.add_argument("--losses", default="artifacts/ml1m_loss_compare.csv")
    fig.add_argument("--out", default="artifacts/figures/scale.png")
    return top


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a subcommand that moved fails naming its new command."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in MOVED:
        raise ConfigError(f"'{PROG} {argv[0]}' moved: run {shlex.join([*MOVED[argv[0]].split(), *argv[1:]])}")
    args = parser().parse_args(argv)
    if args.command == "bench":
        return bench(args, argv)
    return {"make": make, "point": point, "accept": accept, "markdown": markdown, "figure": figure}[args.command](args)
