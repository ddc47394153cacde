"""Checks and cleaning of committed notebooks: what a reader on GitHub sees must be complete and true.

A committed notebook fails the check when a cell that draws a figure has no image, when an output shows an
absolute path of the machine that ran it, or when it holds a progress bar that is not its final state (a
widget, whose saved text is the bar as it was first drawn, or text still holding carriage returns).
`clean` removes progress-bar widgets and keeps the last state of carriage-return lines; it never touches
anything else.

It also fails a run the notebook shows that its epoch budget stopped while it was still improving. The run record
(`session.run_record(runs=...)`) prints one line per run shown (`run_line`), or one line for a group of runs that
patience stopped (`runs_line`), and `problems` reads them back (`budget_problem` has the rule).

Usage after executing a notebook: `python -m helpers.notebook.outputs clean notebooks/*.ipynb`, then
`python -m helpers.notebook.outputs check notebooks/*.ipynb`.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.settings import RECIPES

WIDGET = "application/vnd.jupyter.widget-view+json"
# Calls that draw a figure in this project's notebooks: matplotlib directly or through helpers.plots.
DRAWS = re.compile(r"\bplt\.(?:show|subplots|figure)\(|\bplots\.\w+\(")
# The start of an absolute path on a Unix-like machine, Colab or Windows (a leading "/" after a space, quote,
# bracket or line start, followed by a top-level folder that holds user files); URLs are excluded.
MACHINE_PATH = re.compile(
    r"(?:^|[\s'\"(\[=])(/(?:home|work|Users|root|tmp|mnt|opt|srv|content|var|private|usr)/[^\s'\")\]]*)"
    r"|\b([A-Za-z]:\\[^\s'\"]+)",
    re.MULTILINE,
)


#: A run whose epoch budget stopped it must not have improved in the last `TAIL_SHARE` of its epochs; a run on the
#: paper's fixed budget may have, by at most `FIXED_BUDGET_MARGIN` validation NDCG@10 (the selection metric). The
#: margin is small against the differences the results rest on (SSE-PT's lead over SASRec on ML-1M is 0.017 test
#: NDCG@10; two seeds of one setting differ by up to 0.003).
TAIL_SHARE = 0.1
FIXED_BUDGET_MARGIN = 0.005
#: The paper's fixed epoch budget (the faithful recipe's), the only fixed budget the check accepts.
PAPER_EPOCHS = int(RECIPES["paper"][1]["epochs"])
QUICK = "quick setting"
PAPER_BUDGET = "the paper's fixed {epochs}-epoch budget"
RUN_LINE = re.compile(
    r"^run (?P<name>.+?): (?P<epochs>\d+) of (?P<cap>\d+) epochs, best epoch (?P<best>\d+), "
    r"stopped by (?P<stop>patience|the budget)"
    r"(?: \((?P<budget>quick setting|the paper's fixed (?P<paper>\d+)-epoch budget)\))?"
    r"(?:; the last (?P<tail>\d+) epochs added (?P<gain>[+-]\d+\.\d+) validation NDCG@10)?[ \t]*$",
    re.MULTILINE,
)
RUNS_LINE = re.compile(
    r"^runs (?P<name>.+?) \((?P<count>\d+)\): (?P<low>\d+)-(?P<high>\d+) of (?P<cap>\d+) epochs, "
    r"best epoch (?P<best_low>\d+)-(?P<best_high>\d+), all stopped by patience[ \t]*$",
    re.MULTILINE,
)


@dataclass(frozen=True)
class RunShown:
    """What the check needs to know about one run a notebook shows.

    `stop` is "patience" (it stopped itself: that many evaluations brought nothing new) or "budget" (it trained every
    epoch of `cap`); `budget` says which budget that was: None (a budget of the notebook's choosing), "quick" (the
    notebook's quick setting, which it says it is) or "paper" (the paper's fixed budget); `tail_gain` is what the
    last `tail_epochs` added to the best validation NDCG@10 (None: no evaluation before them).
    """

    name: str
    epochs: int
    cap: int
    best_epoch: int
    stop: str
    budget: str | None = None
    tail_epochs: int = 0
    tail_gain: float | None = None


def tail_epochs(epochs: int) -> int:
    """The last epochs whose gain a budget-stopped run is judged by: `TAIL_SHARE` of them, at least one."""
    return max(1, math.ceil(TAIL_SHARE * epochs))


def run_line(run: RunShown) -> str:
    """The run record's line for one run, in the form `problems` reads (`RUN_LINE`)."""
    line = f"run {run.name}: {run.epochs} of {run.cap} epochs, best epoch {run.best_epoch}, "
    line += "stopped by patience" if run.stop == "patience" else "stopped by the budget"
    if run.stop != "patience" and run.budget is not None:
        line += f" ({QUICK})" if run.budget == "quick" else f" ({PAPER_BUDGET.format(epochs=run.cap)})"
    if run.stop != "patience" and run.tail_gain is not None:
        line += f"; the last {run.tail_epochs} epochs added {run.tail_gain:+.4f} validation NDCG@10"
    return line


def runs_line(name: str, runs: list[RunShown]) -> str:
    """One line for a group of runs that patience stopped (`RUNS_LINE`); refuses a group where it did not."""
    if not runs or any(r.stop != "patience" for r in runs):
        raise ValueError(f"runs_line({name!r}): only for runs that patience stopped; list the others one by one")
    epochs, best = [r.epochs for r in runs], [r.best_epoch for r in runs]
    return (f"runs {name} ({len(runs)}): {min(epochs)}-{max(epochs)} of {max(r.cap for r in runs)} epochs, "
            f"best epoch {min(best)}-{max(best)}, all stopped by patience")


def is_run_line(line: str) -> bool:
    """Whether a line of output is a run record's line about a run (or a group of runs), readable or not."""
    return line.startswith(("run ", "runs ")) and " epochs, best epoch " in line


def budget_problem(line: str) -> str | None:
    """Why a run line shows a run cut short by its epoch budget (None when it does not).

    A run that patience stopped converged by its own rule. A run that trained its whole budget passes when its best
    epoch came before the last `TAIL_SHARE` of its epochs (it had stopped improving), when it is the notebook's quick
    setting, or when the budget is the paper's fixed one and the last `TAIL_SHARE` of the epochs (at least) added at
    most `FIXED_BUDGET_MARGIN` to the best validation NDCG@10. Anything else was still improving when it was stopped.
    """
    match = RUN_LINE.fullmatch(line.strip())
    if match is None:
        group = RUNS_LINE.fullmatch(line.strip())
        if group is None:
            return f"an unreadable run line {line.strip()[:80]!r}"
        if int(group["high"]) > int(group["cap"]) or int(group["best_high"]) > int(group["high"]):
            return f"runs {group['name']}: more epochs than the cap, or a best epoch after the last"
        return None
    name, epochs, cap, best = match["name"], int(match["epochs"]), int(match["cap"]), int(match["best"])
    if epochs > cap or best > epochs or best < 1:
        return f"run {name}: {epochs} of {cap} epochs with best epoch {best} is not possible"
    if match["stop"] == "patience" or best <= epochs - tail_epochs(epochs):
        return None
    if match["budget"] == QUICK:
        return None
    still = f"run {name}: stopped by its epoch budget while still improving (best epoch {best} of {epochs})"
    if match["paper"] is None:
        return still + "; train until patience stops it, with the epochs as a cap"
    if int(match["paper"]) != cap or cap != PAPER_EPOCHS:
        return (f"run {name}: a budget of {cap} epochs named as the paper's fixed {match['paper']}; the paper's "
                f"is {PAPER_EPOCHS}")
    if match["gain"] is None or int(match["tail"]) < tail_epochs(epochs):
        return still + f"; a fixed budget must show what its last {tail_epochs(epochs)} epochs added"
    if float(match["gain"]) > FIXED_BUDGET_MARGIN:
        return still + (f": the last {match['tail']} epochs added {match['gain']} validation NDCG@10, more than the "
                        f"{FIXED_BUDGET_MARGIN} a fixed budget may leave")
    return None



def _text(output: dict[str, Any]) -> str:
    """All text an output shows: stream text, plain-text data, error traceback."""
    parts: list[str] = []
    if "text" in output:
        parts.append("".join(output["text"]))
    for kind in ("text/plain", "text/html", "text/markdown"):
        if kind in output.get("data", {}):
            parts.append("".join(output["data"][kind]))
    parts.extend(output.get("traceback", []))
    return "\n".join(parts)


def recorded_best_epochs(notebook: dict[str, Any]) -> dict[str, int]:
    """The best epoch of every run a notebook's saved run record lists (`run_line` lines), by run name: what a
    test compares with the records in artifacts/, to catch a notebook executed before the artifacts it shows."""
    found = {}
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []):
            text = output.get("text") or output.get("data", {}).get("text/plain") or ""
            for match in RUN_LINE.finditer("".join(text)):
                found[match["name"]] = int(match["best"])
    return found


def problems(notebook: dict[str, Any]) -> list[str]:
    """What a reader would see wrong in a notebook's saved outputs, one line per finding ([] when clean)."""
    found: list[str] = []
    for index, cell in enumerate(notebook.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        outputs = cell.get("outputs", [])
        source = "".join(cell.get("source", []))
        if DRAWS.search(source) and not any("image/png" in o.get("data", {}) for o in outputs):
            found.append(f"cell {index}: draws a figure but has no image output")
        for output in outputs:
            if WIDGET in output.get("data", {}):
                found.append(f"cell {index}: a progress-bar widget (its saved text is not its final state)")
            text = _text(output)
            if "\r" in text.replace("\r\n", "\n"):
                found.append(f"cell {index}: text with carriage returns (an unfinished progress bar)")
            for match in MACHINE_PATH.finditer(text):
                found.append(f"cell {index}: a machine path {(match.group(1) or match.group(2))[:60]!r}")
            for line in text.splitlines():
                if is_run_line(line) and (problem := budget_problem(line)):
                    found.append(f"cell {index}: {problem}")
    return found


def _last_state(text: str) -> str:
    """Each line as a terminal would show it: what follows its last carriage return."""
    lines = text.replace("\r\n", "\n").split("\n")
    return "\n".join(line.rsplit("\r", 1)[-1] for line in lines)


def clean(notebook: dict[str, Any]) -> dict[str, Any]:
    """Remove progress-bar widgets (and their saved state) and keep only the final state of
    carriage-return lines; nothing else changes."""
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            if WIDGET in output.get("data", {}):
                continue
            if output.get("output_type") == "stream":
                output["text"] = _last_state("".join(output["text"])).splitlines(keepends=True)
            kept.append(output)
        cell["outputs"] = kept
    notebook.get("metadata", {}).pop("widgets", None)
    return notebook


def main(argv: list[str] | None = None) -> int:
    """`check` prints every problem and exits 1 if there is one; `clean` rewrites the files in place."""
    parser = argparse.ArgumentParser(prog="python -m helpers.notebook.outputs", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["check", "clean"])
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    failed = False
    for path in args.notebooks:
        notebook = json.loads(path.read_text())
        if args.action == "clean":
            path.write_text(json.dumps(clean(notebook), indent=1, ensure_ascii=False) + "\n")
        for line in problems(notebook):
            print(f"{path}: {line}")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
