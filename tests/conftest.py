"""Shared fixtures: tiny hand-made data, and the real datasets through the mirror."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from helpers import data, fetch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the mirror at ../shared/data unless the environment already names one."""
    if not os.environ.get(fetch.MIRROR_ENV):
        monkeypatch.setenv(fetch.MIRROR_ENV, str(SHARED))


@pytest.fixture
def tiny_file(tmp_path: Path) -> Path:
    """Three users: lengths 5, 2 and 4 over 6 items."""
    path = tmp_path / "tiny.txt"
    path.write_text("1 1\n1 2\n1 3\n1 4\n1 5\n2 2\n2 6\n3 6\n3 5\n3 4\n3 3\n")
    return path


@pytest.fixture(scope="session")
def ml1m() -> data.SequenceData:
    """Real ML-1M (fetched once into data/)."""
    os.environ.setdefault(fetch.MIRROR_ENV, str(SHARED))
    return data.load("ml-1m")


@pytest.fixture(scope="session")
def wiki() -> data.SequenceData:
    """Real Wiki1000."""
    os.environ.setdefault(fetch.MIRROR_ENV, str(SHARED))
    return data.load("wiki1000")


@pytest.fixture(scope="session")
def ml1m_slice(ml1m: data.SequenceData) -> data.SequenceData:
    """The first 300 users of ML-1M, ids and item space unchanged."""
    return ml1m.subset_users(np.arange(1, 301), name="ml-1m-300")
