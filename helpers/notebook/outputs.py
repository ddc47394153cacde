"""Checks and cleaning of committed notebooks: what a reader on GitHub sees must be complete and true.

A committed notebook fails the check when a cell that draws a figure has no image, when an output shows an
absolute path of the machine that ran it, or when it holds a progress bar that is not its final state (a
widget, whose saved text is the bar as it was first drawn, or text still holding carriage returns).
`clean` removes progress-bar widgets and keeps the last state of carriage-return lines; it never touches
anything else. Usage after executing a notebook: `python -m helpers.notebook.outputs clean notebooks/*.ipynb`,
then `python -m helpers.notebook.outputs check notebooks/*.ipynb`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

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
