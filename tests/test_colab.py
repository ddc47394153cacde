"""The Colab cell's helper: it updates a clone, works from its notebooks/ folder, and fails in one clear line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from helpers.notebook import colab


def test_prepare_updates_the_clone_and_works_from_its_notebooks(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    origin, clone = tmp_path / "origin", tmp_path / "clone"
    (origin / "notebooks").mkdir(parents=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q", str(origin)], check=True)
    (origin / "notebooks" / "a.txt").write_text("one")
    subprocess.run([*git, "-C", str(origin), "add", "."], check=True)
    subprocess.run([*git, "-C", str(origin), "commit", "-q", "-m", "one"], check=True)
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
    (origin / "notebooks" / "a.txt").write_text("two")
    subprocess.run([*git, "-C", str(origin), "commit", "-q", "-am", "two"], check=True)
    monkeypatch.chdir(tmp_path)
    colab.prepare(clone, use_drive=False)
    assert Path(os.getcwd()) == clone / "notebooks" and (clone / "notebooks" / "a.txt").read_text() == "two"


def test_a_failed_update_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"(?s)pull --ff-only.*failed.*delete"):
        colab.update(tmp_path)  # not a git clone


def test_only_missing_optional_packages_are_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(colab.subprocess, "run",
                        lambda step, **_: calls.append(step) or subprocess.CompletedProcess(step, 0, "", ""))
    monkeypatch.setattr(colab.importlib.util, "find_spec", lambda name: None if name == "optuna" else object())
    assert colab.install_missing(["optuna", "tensorboard"]) == ["optuna>=4.9"]
    assert calls[0][-3:] == ["install", "-q", "optuna>=4.9"]
    calls.clear()
    assert colab.install_missing(["tensorboard"]) == [] and calls == []
