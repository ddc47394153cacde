"""Fetching: the data folder, the mirror, the public URLs, and the checksum on every path."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from helpers import data, fetch
from helpers.errors import DataError


def test_fetch_from_mirror_checks_sha(tmp_path: Path) -> None:
    path = fetch.fetch("wiki1000", tmp_path)
    assert path == tmp_path / "wikipedia.txt"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == fetch.FILES["wiki1000"].sha256
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left


def test_fetch_rejects_corrupt_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "wikipedia.txt").write_text("1 1\n")
    monkeypatch.setenv(fetch.MIRROR_ENV, str(mirror))
    dest = tmp_path / "data"
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        fetch.fetch("wiki1000", dest)
    assert not (dest / "wikipedia.txt").exists()
    assert list(dest.iterdir()) == []  # nothing half-written


def test_fetch_rejects_corrupt_local_file(tmp_path: Path) -> None:
    (tmp_path / "wikipedia.txt").write_text("1 1\n")
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        fetch.fetch("wiki1000", tmp_path)


def test_fetch_missing_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(fetch.MIRROR_ENV)
    offline = fetch.RemoteFile("wikipedia.txt", fetch.FILES["wiki1000"].sha256, ("http://127.0.0.1:9/wikipedia.txt",))
    monkeypatch.setitem(fetch.FILES, "wiki1000", offline)
    with pytest.raises(DataError) as info:
        fetch.fetch("wiki1000", tmp_path)
    message = str(info.value)
    assert "wikipedia.txt" in message and "SSEPT_DATA_MIRROR" in message and "127.0.0.1:9" in message
    assert "\n" not in message


def test_data_keeps_fetch_and_files() -> None:
    """The notebooks call `data.fetch(...)` and read `data.FILES[...]`."""
    assert data.fetch is fetch.fetch and data.FILES is fetch.FILES
