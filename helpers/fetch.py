"""Files the project fetches: where each comes from, its checksum, and getting it safely.

`fetch(name)` returns the local path of a file in `FILES`, taken from the data folder, a
mirror folder (`$SSEPT_DATA_MIRROR`) or the public URLs, always checked against its
SHA-256 and written atomically. A download is streamed to a temporary file, at most
`MAX_DOWNLOAD_BYTES`, and checked before it is kept; an archive is checked against its own
checksum before it is opened, and its member is decompressed (at most as many bytes) and
checked before it is kept. Parsing what was fetched lives in `helpers.data`.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from helpers.errors import DataError
from helpers.utils import atomic_write

#: Environment variable naming a folder with copies of the files, tried before the network.
MIRROR_ENV = "SSEPT_DATA_MIRROR"
#: Environment variable naming the local data folder.
DATA_DIR_ENV = "SSEPT_DATA_DIR"
#: The local data folder when `$SSEPT_DATA_DIR` is not set: `data/` in the repository (a checkout has
#: `data/README.md` beside `helpers/`); for an installed package (`pip install .` on a cluster), a folder
#: in the user's cache, never site-packages.
_CHECKOUT_DATA = Path(__file__).resolve().parent.parent / "data"
DEFAULT_DATA_DIR = (_CHECKOUT_DATA if (_CHECKOUT_DATA / "README.md").is_file()
                    else Path.home() / ".cache" / "ssept-pytorch" / "data")
#: Seconds to wait on one public URL before trying the next.
DOWNLOAD_TIMEOUT_S = 60
#: Bytes read at a time when hashing or copying a file (1 MiB).
READ_CHUNK_BYTES = 1 << 20
#: The most bytes a download, or a member decompressed from it, may have (every listed file has under 10 MB).
MAX_DOWNLOAD_BYTES = 256 << 20


@dataclass(frozen=True)
class RemoteFile:
    """A file the project fetches: where it lives locally and where it comes from."""

    relpath: str  # path under the data folder and under the mirror folder
    sha256: str  # expected SHA-256 of the file's bytes
    urls: tuple[str, ...]  # public sources, tried in order
    zip_member: str | None = None  # when the URL is a zip archive, the member to extract
    archive_md5: str | None = None  # with `zip_member`: the archive's MD5 as its publisher lists it (GroupLens)


_SASREC = "https://raw.githubusercontent.com/kang205/SASRec/master/data/"
_PMIXER = "https://raw.githubusercontent.com/pmixer/SASRec.pytorch/main/python/data/"
_GROUPLENS = "https://files.grouplens.org/datasets/movielens/"

FILES: dict[str, RemoteFile] = {
    "ml-1m": RemoteFile(
        "ml-1m.txt",
        "b725f3acb3986fe3130bffd1e77a74d182a1f51799567a236dbd60270f95b0a2",
        (_SASREC + "ml-1m.txt", _PMIXER + "ml-1m.txt"),
    ),
    "wiki1000": RemoteFile(
        "wikipedia.txt",
        "ab5d5addedafb496a212d939cb595637f580e436f640916ba337edb03aa02bed",
        (_PMIXER + "wikipedia.txt",),
    ),
    "ml-100k": RemoteFile(
        "ml-100k/u.data",
        "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
        (_GROUPLENS + "ml-100k.zip",),
        zip_member="ml-100k/u.data",
        archive_md5="0e33842e24a9c977be4e0107933c0723",
    ),
    "ml-1m-movies": RemoteFile(
        "ml-1m-movies.dat",
        "0140fc2356357c1a851d0f52e893a1e4d3696df632c4141cea8d5bc3d621f0b9",
        (_GROUPLENS + "ml-1m.zip",),
        zip_member="ml-1m/movies.dat",
        archive_md5="c4d9eecfca2ab87c1945afe126590906",
    ),
    "ml-1m-item-ids": RemoteFile(
        "ml-1m-item-ids.txt",
        "9ae42c23af0b0fe2f189b9d5acc6cf3936bffe1a9568390cf5d100c0c1b1fca1",
        ("https://raw.githubusercontent.com/asash/ml1m-sas-mapping/main/sas_to_original_items.txt",),
    ),
}
def data_dir() -> Path:
    """The local data folder: `$SSEPT_DATA_DIR` if set, else `DEFAULT_DATA_DIR`."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def sha256_of(path: Path) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(READ_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha(path: Path, spec: RemoteFile, origin: str) -> None:
    got = sha256_of(path)
    if got != spec.sha256:
        raise DataError(
            f"SHA-256 mismatch for {path} (from {origin}): expected {spec.sha256}, got {got}; "
            "the file is corrupt or a different version, delete it and fetch again"
        )


def _copy_verified(src: Path, dest: Path, spec: RemoteFile) -> Path:
    """Copy `src` to `dest`, hashing on the way; a mismatch leaves no file behind."""

    def write(out: io.BufferedIOBase) -> None:
        digest = hashlib.sha256()
        with open(src, "rb") as f:
            for chunk in iter(lambda: f.read(READ_CHUNK_BYTES), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != spec.sha256:
            raise DataError(
                f"SHA-256 mismatch for {src} (mirror ${MIRROR_ENV}): expected {spec.sha256}, "
                f"got {digest.hexdigest()}; the mirror's copy is corrupt or a different version"
            )

    return atomic_write(dest, write)


def _copy_capped(read: Callable[[int], bytes], out: io.BufferedIOBase, what: str,
                 digests: tuple[hashlib._Hash, ...]) -> None:
    """Copy `read`'s chunks to `out`, updating `digests`; refuse more than `MAX_DOWNLOAD_BYTES` bytes."""
    total = 0
    for chunk in iter(lambda: read(READ_CHUNK_BYTES), b""):
        total += len(chunk)
        if total > MAX_DOWNLOAD_BYTES:
            raise DataError(f"{what} has more than {MAX_DOWNLOAD_BYTES} bytes (MAX_DOWNLOAD_BYTES): refused")
        for digest in digests:
            digest.update(chunk)
        out.write(chunk)


def _checked_write(dest: Path, read: Callable[[int], bytes], what: str, spec: RemoteFile) -> Path:
    """Stream `read` into `dest` through a temporary file, kept only if its SHA-256 is the listed one."""

    def write(out: io.BufferedIOBase) -> None:
        digest = hashlib.sha256()
        _copy_capped(read, out, what, (digest,))
        if digest.hexdigest() != spec.sha256:
            raise DataError(f"SHA-256 mismatch for {what}: expected {spec.sha256}, got {digest.hexdigest()}")

    return atomic_write(dest, write)


def _download(url: str, spec: RemoteFile, dest: Path) -> Path:
    """`url`'s file (or the member of its archive) at `dest`, checked before anything is kept or decompressed."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:  # noqa: S310 (fixed https URLs)
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > MAX_DOWNLOAD_BYTES:
            raise DataError(f"{url} has more than {MAX_DOWNLOAD_BYTES} bytes (MAX_DOWNLOAD_BYTES): refused")
        if spec.zip_member is None:
            return _checked_write(dest, resp.read, url, spec)
        if spec.archive_md5 is None:
            raise DataError(f"{url} is an archive without a listed checksum (archive_md5): not opened")
        with tempfile.TemporaryFile() as archive:  # deleted when closed, whatever happens
            md5 = hashlib.md5(usedforsecurity=False)
            _copy_capped(resp.read, archive, url, (md5,))
            if md5.hexdigest() != spec.archive_md5:
                raise DataError(f"MD5 mismatch for the archive {url}: expected {spec.archive_md5}, "
                                f"got {md5.hexdigest()}; not opened")
            archive.seek(0)
            with zipfile.ZipFile(archive) as zf:
                info = zf.getinfo(spec.zip_member)
                if info.file_size > MAX_DOWNLOAD_BYTES:
                    raise DataError(f"{spec.zip_member} in {url} has more than {MAX_DOWNLOAD_BYTES} bytes "
                                    "(MAX_DOWNLOAD_BYTES): not decompressed")
                with zf.open(info) as member:
                    return _checked_write(dest, member.read, f"{spec.zip_member} in {url}", spec)


def fetch(name: str, folder: str | Path | None = None) -> Path:
    """Return the local path of a named file, fetching and verifying it first if needed.

    Order: `folder/FILE` if present, else a copy from `$SSEPT_DATA_MIRROR/FILE`, else a
    download from the public URLs. The SHA-256 is always checked, and a new file
    appears only complete (temporary file, then rename).
    """
    if name not in FILES:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(FILES))}")
    spec = FILES[name]
    target = Path(folder) if folder is not None else data_dir()
    dest = target / spec.relpath
    if dest.exists():
        _check_sha(dest, spec, "the local data folder")
        return dest

    tried: list[str] = [f"{dest} (not there)"]
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        src = Path(mirror) / spec.relpath
        if src.exists():
            return _copy_verified(src, dest, spec)
        tried.append(f"{src} (${MIRROR_ENV}: not there)")
    else:
        tried.append(f"${MIRROR_ENV} (not set)")

    for url in spec.urls:
        try:
            return _download(url, spec, dest)
        except DataError as err:  # too large, or not the listed file: nothing was kept
            tried.append(f"{url} ({err})")
        except Exception as err:  # any network or archive failure: try the next source
            tried.append(f"{url} ({type(err).__name__}: {err})")

    raise DataError(
        f"could not get {spec.relpath!r} for dataset {name!r}; looked at: {'; '.join(tried)}. "
        f"Put the file at {dest}, or set ${MIRROR_ENV} to a folder holding {spec.relpath}, "
        "or run where the public URL is reachable"
    )
