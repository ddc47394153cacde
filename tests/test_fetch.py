"""Fetching: the data folder, the mirror, the public URLs, and the checksum on every path."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
import urllib.request
import zipfile
from collections.abc import Iterator
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


# --------------------------------------------------------------------------- downloads (a local server, offline)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1, and its base URL."""
    root = tmp_path / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _spec(monkeypatch: pytest.MonkeyPatch, spec: fetch.RemoteFile) -> None:
    monkeypatch.delenv(fetch.MIRROR_ENV, raising=False)
    monkeypatch.setitem(fetch.FILES, "test-file", spec)


def _zip(path: Path, member: str, body: bytes) -> bytes:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, body)
    return path.read_bytes()


def test_download_is_streamed_and_checked_before_it_is_kept(tmp_path: Path, served: tuple[Path, str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    root, url = served
    body = b"1 1\n1 2\n" * 5000
    (root / "good.txt").write_bytes(body)
    (root / "bad.txt").write_bytes(body[:-1] + b"3")
    sha = hashlib.sha256(body).hexdigest()
    whole_reads: list[int] = []
    real_urlopen = urllib.request.urlopen

    def urlopen(*args: object, **kwargs: object):  # noqa: ANN202
        resp = real_urlopen(*args, **kwargs)
        read = resp.read

        def capped_read(amt: int | None = None) -> bytes:
            if amt is None or amt < 0:
                whole_reads.append(1)
            return read(amt)

        resp.read = capped_read
        return resp

    monkeypatch.setattr(fetch.urllib.request, "urlopen", urlopen)
    _spec(monkeypatch, fetch.RemoteFile("f.txt", sha, (url + "bad.txt", url + "good.txt")))
    dest = tmp_path / "data"
    path = fetch.fetch("test-file", dest)
    assert path.read_bytes() == body and whole_reads == []  # read in chunks, never at once
    assert [p.name for p in dest.iterdir()] == ["f.txt"]  # the bad copy left nothing behind
    _spec(monkeypatch, fetch.RemoteFile("g.txt", sha, (url + "bad.txt",)))
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        fetch.fetch("test-file", dest)
    assert [p.name for p in dest.iterdir()] == ["f.txt"]


def test_download_above_the_size_cap_is_refused(tmp_path: Path, served: tuple[Path, str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    root, url = served
    body = b"x" * 50_000
    (root / "big.txt").write_bytes(body)
    monkeypatch.setattr(fetch, "MAX_DOWNLOAD_BYTES", 10_000)
    _spec(monkeypatch, fetch.RemoteFile("big.txt", hashlib.sha256(body).hexdigest(), (url + "big.txt",)))
    with pytest.raises(DataError, match="more than 10000 bytes"):
        fetch.fetch("test-file", tmp_path / "data")
    assert not (tmp_path / "data").exists() or list((tmp_path / "data").iterdir()) == []


def test_an_archive_is_checked_before_it_is_opened(tmp_path: Path, served: tuple[Path, str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root, url = served
    member = b"1\t2\t5\t881250949\n" * 200
    archive = _zip(root / "a.zip", "a/u.data", member)
    (root / "other.zip").write_bytes(_zip(tmp_path / "other.zip", "a/u.data", member) + b"\0")  # same member
    good = fetch.RemoteFile("u.data", hashlib.sha256(member).hexdigest(), (url + "a.zip",), zip_member="a/u.data",
                            archive_md5=hashlib.md5(archive).hexdigest())
    opened: list[object] = []
    real_zip = zipfile.ZipFile

    def zip_file(*args: object, **kwargs: object) -> zipfile.ZipFile:
        opened.append(args[0])
        return real_zip(*args, **kwargs)

    monkeypatch.setattr(fetch.zipfile, "ZipFile", zip_file)
    # Another archive holding the very member: refused by the archive's checksum, never opened.
    _spec(monkeypatch, fetch.RemoteFile(**{**good.__dict__, "urls": (url + "other.zip",)}))
    with pytest.raises(DataError, match="mismatch"):
        fetch.fetch("test-file", tmp_path / "data")
    assert opened == [] and not (tmp_path / "data" / "u.data").exists()
    # The right archive: opened once checked, the member checked too.
    monkeypatch.setitem(fetch.FILES, "test-file", good)
    assert fetch.fetch("test-file", tmp_path / "data").read_bytes() == member
    assert len(opened) == 1
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["u.data"]


def test_an_archive_member_above_the_cap_is_not_decompressed(tmp_path: Path, served: tuple[Path, str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    root, url = served
    member = b"0" * 200_000  # compresses to a few hundred bytes
    archive = _zip(root / "bomb.zip", "m", member)
    monkeypatch.setattr(fetch, "MAX_DOWNLOAD_BYTES", 50_000)
    _spec(monkeypatch, fetch.RemoteFile("m", hashlib.sha256(member).hexdigest(), (url + "bomb.zip",),
                                        zip_member="m", archive_md5=hashlib.md5(archive).hexdigest()))
    with pytest.raises(DataError, match="more than 50000 bytes"):
        fetch.fetch("test-file", tmp_path / "data")
    assert not (tmp_path / "data" / "m").exists()


def test_the_listed_archives_have_their_own_checksum() -> None:
    for name, spec in fetch.FILES.items():
        if spec.zip_member is not None:
            assert spec.archive_md5 and len(spec.archive_md5) == 32, name
