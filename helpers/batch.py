"""Recommendations for every user, streamed to disk in parts: the job behind `python -m helpers.recommend --all-users`.

`write_recommendations(model, data, out, k, checkpoint_digest=...)` gives each user the `k` best items after their
whole history (the last `maxlen` items enter the model), as `helpers.recommend.recommend(model, history, user, k)`
does: items of the history left out unless `keep_seen`, equal scores by the smaller item id. Users are scored in
blocks of `batch_users` (default: the evaluation's, `helpers.evaluate.batch_size_for`; shortest histories together)
and items in blocks of `block_size` with a running top k; a part's rows (users x k) are written as it ends, so
memory grows with `batch_users x block_size` and the part's size, never with users x items.

The output is one row per (user, rank): `user,rank,item,score`, in the user's own ids when the data came through
`helpers.convert` (`maps`). `out` is either
- a file (`.csv`, or `.parquet` with pyarrow installed), written whole by one process; or
- a folder of parts (`part-00000.csv`, ...; `part_users` users each, in the dataset's user order) and
  `manifest.json`. Under torchrun each rank writes every `size`-th part and rank 0 the manifest, which lists
  the parts with their users and row counts once all are written. Every part is written through `atomic_write`,
  so a part that exists is complete: a relaunched job (any number of processes) skips the parts that exist.
  The manifest also names the job (checkpoint and data digests, k, keep_seen, the users asked for, the part
  size, the format), and a folder that holds another job's parts is refused before anything is written.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import torch

from helpers.convert import IdMaps
from helpers.data import SequenceData
from helpers.distributed import SINGLE_PROCESS, World
from helpers.errors import ConfigError, DataError, NonFiniteError, SSEPTError
from helpers.evaluate import SCORE_BLOCK, batch_size_for, catalogue_scorer, item_blocks, n_items_of
from helpers.history import gather_windows
from helpers.utils import atomic_write, relative, write_json

#: Output formats; a file's suffix names its format.
FORMATS = ("csv", "parquet")
#: Users per part file: a killed job loses at most one part per process.
PART_USERS = 1000
#: The folder's description of the job and, once it is done, of its parts.
MANIFEST = "manifest.json"
#: Marks a manifest written by this module.
MANIFEST_FORMAT = "ssept-batch/1"
#: The columns of every part.
COLUMNS = ("user", "rank", "item", "score")
#: What to install for Parquet output.
PARQUET_HINT = "pip install pyarrow"
#: Digits of a score in CSV: enough to read back the float32 exactly.
CSV_FLOAT = "%.9g"
#: The key of an item a user may not get (below every real key).
_MASKED = torch.iinfo(torch.int64).min
_LOW32 = (1 << 32) - 1


# --------------------------------------------------------------------------- inputs


def file_digest(path: str | Path) -> str:
    """A hash of a file's bytes (a checkpoint's), read in chunks."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def users_with_rows(data: SequenceData) -> np.ndarray:
    """Every user id with at least one row, in order."""
    return np.flatnonzero(data.lengths[1:] > 0) + 1


def read_users(path: str | Path, data: SequenceData, maps: IdMaps | None) -> np.ndarray:
    """The users named in a file (one id a line, the dataset's own ids; blank lines ignored), as sorted unique
    project ids; an unknown user, or one without rows, is a one-line error naming the line."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file of users")
    found = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text:
            continue
        if maps is not None:
            user = maps.user_ids.get(text)
        else:
            user = int(text) if text.isdigit() else None
        if user is None or not 1 <= user <= data.n_users:
            raise DataError(f"{path}, line {lineno}: unknown user {text!r} (not one of the dataset's users)")
        if data.lengths[user] == 0:
            raise DataError(f"{path}, line {lineno}: user {text!r} has no rows in the dataset")
        found.append(user)
    if not found:
        raise DataError(f"{path}: names no user")
    return np.unique(np.array(found, dtype=np.int64))


def check_k(k: int, n_items: int) -> None:
    """A top k must leave items out: 1 <= k < n_items."""
    if not 1 <= k < n_items:
        raise ConfigError(f"--k {k} must be at least 1 and below the number of items ({n_items})")


def output_format(out: Path, fmt: str | None) -> tuple[bool, str]:
    """(is a single file, format): a `.csv` or `.parquet` path is a file of that format, anything else a
    folder of parts (CSV unless `fmt` says otherwise)."""
    suffix = out.suffix.lstrip(".")
    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(f"format must be one of {FORMATS}, got {fmt!r}")
    if suffix in FORMATS:
        if fmt is not None and fmt != suffix:
            raise ConfigError(f"--out {out.name} is a .{suffix} file, but --format says {fmt}")
        return True, suffix
    return False, fmt or "csv"


def require_pyarrow() -> Any:
    """`pyarrow.parquet`, or a one-line error naming what to install."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"Parquet output needs pyarrow, which is not installed: {PARQUET_HINT} "
                          "(or write CSV)") from None
    return pq


# --------------------------------------------------------------------------- scoring


def _keys(scores: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """int64 keys whose order is the ranking: by score, best first, then by the smaller id (the float's bits
    made monotone in its value, above the id's complement), so a top k of keys is exact and repeatable."""
    bits = (scores.float() + 0.0).view(torch.int32).to(torch.int64)  # + 0.0: -0.0 ranks as 0.0
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return ordered * (1 << 32) + (_LOW32 - ids)


def _decode(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Item ids and float32 scores back from `_keys`."""
    ids = _LOW32 - (keys & _LOW32)
    ordered = keys >> 32
    bits = torch.where(ordered < 0, ordered ^ 0x7FFFFFFF, ordered).to(torch.int32)
    return ids, bits.view(torch.float32)


def history_pairs(data: SequenceData, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) for every item of each user's whole history (rows index `users`)."""
    lengths = data.lengths[users]
    rows = np.repeat(np.arange(users.size), lengths)
    first = np.repeat(data.offsets[users] - np.cumsum(lengths) + lengths, lengths)
    return rows, data.items[first + np.arange(rows.size)]


@torch.no_grad()
def top_k_users(model: Any, data: SequenceData, users: np.ndarray, k: int, keep_seen: bool = False,
                block_size: int = SCORE_BLOCK, device: torch.device | str = "cpu") -> list[tuple[np.ndarray,
                                                                                               np.ndarray]]:
    """Each of `users`' (items, scores), best first: `recommend(model, data.user_items(u), u, k, keep_seen)`
    for a block of users at once, with the catalogue scored in blocks of `block_size` items."""
    start, end = data.offsets[users], data.offsets[users + 1]
    width = int(min(model.maxlen, max(int((end - start).max()), 1)))
    seqs = torch.from_numpy(gather_windows(data.items, start, end, width)).to(device)
    score, n_cols = catalogue_scorer(model, torch.from_numpy(users).to(device), seqs)
    rows, seen = history_pairs(data, users)
    best = torch.full((users.size, 0), _MASKED, dtype=torch.int64, device=device)
    bad = 0
    for lo, hi in item_blocks(n_cols, block_size):
        ids = torch.arange(lo, hi, device=device)
        scores = score(ids).float()
        allowed = torch.ones_like(scores, dtype=torch.bool)
        if lo == 0:
            allowed[:, 0] = False  # padding
        if not keep_seen:
            inside = (seen >= lo) & (seen < hi)
            allowed[torch.from_numpy(rows[inside]).to(device), torch.from_numpy(seen[inside] - lo).to(device)] = False
        bad += int((~torch.isfinite(scores) & allowed).sum())
        keys = torch.where(allowed, _keys(scores, ids), _MASKED)
        merged = torch.cat([best, keys], dim=1)
        best = merged.topk(min(k, merged.shape[1]), dim=1).values
    if bad:
        raise NonFiniteError(f"{bad} item scores of users {int(users[0])}..{int(users[-1])} are NaN or infinite: "
                             "the model has diverged")
    ids, scores = _decode(best.cpu())
    real = (best != _MASKED).cpu()  # fewer than k when a history leaves fewer items
    return [(ids[r][real[r]].numpy(), scores[r][real[r]].numpy()) for r in range(users.size)]


# --------------------------------------------------------------------------- writing


class _Rows:
    """Writes blocks of rows to an open binary file as CSV or Parquet; counts them."""

    def __init__(self, f: IO[bytes], fmt: str, maps: IdMaps | None) -> None:
        self.f, self.fmt, self.maps, self.count = f, fmt, maps, 0
        self.parquet = None
        if fmt == "parquet":
            pq = require_pyarrow()
            import pyarrow as pa

            ids = pa.string() if maps is not None else pa.int64()
            self.pa = pa
            self.schema = pa.schema([("user", ids), ("rank", pa.int32()), ("item", ids), ("score", pa.float32())])
            self.parquet = pq.ParquetWriter(f, self.schema)
        else:
            f.write((",".join(COLUMNS) + "\n").encode())

    def write(self, users: np.ndarray, recs: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """One block: each user's recommendations, best first."""
        counts = np.array([items.size for items, _ in recs], dtype=np.int64)
        if counts.sum() == 0:
            return
        user_col = np.repeat(users, counts)
        rank = np.concatenate([np.arange(1, n + 1) for n in counts]).astype(np.int32)
        items = np.concatenate([items for items, _ in recs])
        scores = np.concatenate([scores for _, scores in recs]).astype(np.float32)
        if self.maps is not None:
            user_col, items = self.maps.users[user_col], self.maps.items[items]
        frame = pd.DataFrame({"user": user_col, "rank": rank, "item": items, "score": scores})
        if self.parquet is not None:
            self.parquet.write_table(self.pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False))
        else:
            buffer = io.StringIO()
            frame.to_csv(buffer, header=False, index=False, float_format=CSV_FLOAT, lineterminator="\n")
            self.f.write(buffer.getvalue().encode())
        self.count += int(counts.sum())

    def close(self) -> None:
        if self.parquet is not None:
            self.parquet.close()


def _write_users(path: Path, fmt: str, blocks: Iterator[tuple[np.ndarray, list]], maps: IdMaps | None) -> int:
    """Write every block's rows into `path` through `atomic_write` (all or nothing); the row count."""
    written = [0]

    def write(f: IO[bytes]) -> None:
        rows = _Rows(f, fmt, maps)
        for users, recs in blocks:
            rows.write(users, recs)
        rows.close()
        written[0] = rows.count

    atomic_write(path, write)
    return written[0]


def count_rows(path: Path, fmt: str) -> int:
    """Rows of a finished part (its data lines, or its Parquet metadata)."""
    if fmt == "parquet":
        return int(require_pyarrow().ParquetFile(path).metadata.num_rows)
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b"")) - 1


def part_name(index: int, fmt: str) -> str:
    """The file name of part `index`."""
    return f"part-{index:05d}.{fmt}"


def job_description(checkpoint_digest: str, data: SequenceData, users: np.ndarray, k: int, keep_seen: bool,
                    part_users: int, fmt: str) -> dict[str, Any]:
    """What makes two runs the same job, so that one may finish the other's parts."""
    users_digest = hashlib.blake2b(np.ascontiguousarray(users, dtype=np.int64).tobytes(), digest_size=16)
    return {"checkpoint_digest": checkpoint_digest, "data_digest": data.digest(), "k": k, "keep_seen": keep_seen,
            "users": int(users.size), "users_digest": users_digest.hexdigest(), "part_users": part_users,
            "format": fmt}


def _claim(out: Path, job: dict[str, Any]) -> None:
    """Check that `out` is empty, absent or this job's folder (else a one-line error naming what differs); write
    the job's manifest when there is none; remove temporary files a killed job left."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {relative(out)} is a file; give a folder, or a .csv or .parquet file name")
    manifest = _read_json(out / MANIFEST)
    if manifest is None:
        if out.exists() and any(out.iterdir()):
            raise ConfigError(f"{relative(out)} is not empty and has no {MANIFEST}: it holds no batch job's parts; "
                              "use another --out")
        write_json(out / MANIFEST, {"format": MANIFEST_FORMAT, "job": job, "complete": False, "parts": None})
        return
    theirs = manifest.get("job") if manifest.get("format") == MANIFEST_FORMAT else None
    if theirs is None:
        raise ConfigError(f"{relative(out / MANIFEST)} is not a batch job's manifest; use another --out")
    differ = [key for key in job if theirs.get(key) != job[key]]
    if differ:
        key = differ[0]
        raise ConfigError(f"{relative(out)} holds parts of another job ({key} {theirs.get(key)!r} there, "
                          f"{job[key]!r} here); use another --out, or remove that folder")
    for stale in out.glob(".part-*.tmp"):  # a killed job's unfinished part: never read, and rewritten
        stale.unlink(missing_ok=True)


def _agreed(world: World, work: Callable[[], Any]) -> list[Any]:
    """`work()` on every rank, then every rank's result gathered (indexed by rank): a project error on any rank
    is raised on every rank, so none waits at a collective that the failed one never reaches."""
    try:
        outcome: tuple[str, Any] = ("ok", work())
    except SSEPTError as err:
        outcome = ("error", (type(err), str(err)))
    gathered = world.all_gather(outcome)
    for status, value in gathered:
        if status == "error":
            kind, message = value
            raise kind(message)
    return [value for _, value in gathered]


def _read_json(path: Path) -> Any:
    """A JSON file's value, or None when there is no such file."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        raise DataError(f"{relative(path)}: not a readable JSON file") from None


def write_recommendations(
    model: Any,
    data: SequenceData,
    out: str | Path,
    k: int,
    checkpoint_digest: str,
    keep_seen: bool = False,
    users: np.ndarray | None = None,
    maps: IdMaps | None = None,
    fmt: str | None = None,
    part_users: int = PART_USERS,
    batch_users: int | None = None,
    block_size: int = SCORE_BLOCK,
    world: World = SINGLE_PROCESS,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Write each of `users`' (default: every user with rows) top `k` to `out` (see the module docstring);
    return a summary (`out`, users, rows, parts written and skipped, seconds). Every check that can fail on
    the inputs runs before anything is written."""
    out = Path(out)
    check_k(k, n_items_of(model))
    # The evaluation's batch size (32 users on a CPU, 256 elsewhere): on a CPU smaller batches score faster.
    batch_users = batch_size_for(torch.device(device)) if batch_users is None else batch_users
    for name, value in (("part_users", part_users), ("batch_users", batch_users), ("block_size", block_size)):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    single, fmt = output_format(out, fmt)
    if fmt == "parquet":
        require_pyarrow()
    if single and world.size > 1:
        raise ConfigError(f"--out {out.name} is one file, which one process writes; under torchrun give a folder")
    users = users_with_rows(data) if users is None else np.asarray(users, dtype=np.int64)
    if hasattr(model, "eval"):
        model.eval()
    t0 = time.perf_counter()

    def blocks(part: np.ndarray) -> Iterator[tuple[np.ndarray, list]]:
        # Scored shortest histories first (each block is trimmed to its longest window); a part's top k (part
        # users x k rows, never x items) is then written in user order, a block of users at a time.
        found: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        by_length = part[np.argsort(data.lengths[part], kind="stable")]
        for lo in range(0, by_length.size, batch_users):
            chunk = by_length[lo:lo + batch_users]
            found.update(zip(chunk.tolist(), top_k_users(model, data, chunk, k, keep_seen, block_size, device)))
        for lo in range(0, part.size, batch_users):
            chunk = part[lo:lo + batch_users]
            yield chunk, [found.pop(int(u)) for u in chunk]

    parts = [users[i:i + part_users] for i in range(0, users.size, part_users)]
    if single:
        rows = _write_users(out, fmt, (block for part in parts for block in blocks(part)), maps)
        return {"out": relative(out), "users": int(users.size), "rows": rows, "parts_written": 1,
                "parts_skipped": 0, "seconds": round(time.perf_counter() - t0, 3)}

    job = job_description(checkpoint_digest, data, users, k, keep_seen, part_users, fmt)
    _agreed(world, lambda: _claim(out, job) if world.main else None)

    def mine() -> list[dict[str, Any]]:
        done = []
        for index in range(world.rank, len(parts), world.size):
            path, part = out / part_name(index, fmt), parts[index]
            skipped = path.exists()
            rows = count_rows(path, fmt) if skipped else _write_users(path, fmt, blocks(part), maps)
            done.append({"file": path.name, "index": index, "users": int(part.size), "rows": rows,
                         "first_user": _shown(maps, part[0]), "last_user": _shown(maps, part[-1]),
                         "skipped": skipped})
        return done

    gathered = _agreed(world, mine)
    listed = sorted((row for rows in gathered for row in rows), key=lambda row: row["index"])
    seconds = round(time.perf_counter() - t0, 3)
    peaks = world.all_gather(_peak_rss_mb())
    summary = {"out": relative(out), "users": int(users.size), "rows": sum(r["rows"] for r in listed),
               "parts_written": sum(not r["skipped"] for r in listed),
               "parts_skipped": sum(r["skipped"] for r in listed), "seconds": seconds}
    if world.main:
        parts_listed = [{key: r[key] for key in ("file", "users", "rows", "first_user", "last_user")} for r in listed]
        write_json(out / MANIFEST, {"format": MANIFEST_FORMAT, "job": job, "complete": True, "parts": parts_listed,
                                    "rows": summary["rows"], "processes": world.size,
                                    "last_run": {"seconds": seconds, "parts_written": summary["parts_written"],
                                                 "parts_skipped": summary["parts_skipped"],
                                                 "peak_rss_mb_per_process": peaks}})
    world.barrier()
    return summary


def _shown(maps: IdMaps | None, user: int) -> str | int:
    """A user id as the output writes it."""
    return str(maps.users[user]) if maps is not None else int(user)


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (MB): Linux's VmHWM, which starts again at exec (getrusage's peak
    would carry the RSS of the process that started this one), else getrusage's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, IndexError, ValueError):
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def read_output(out: str | Path) -> pd.DataFrame:
    """Every row a job wrote (a file, or a folder's parts in order) as one frame: for checks and small outputs."""
    out = Path(out)
    if out.is_file():
        paths = [out]
    else:
        manifest = _read_json(out / MANIFEST)
        if not manifest or not manifest.get("complete"):
            raise DataError(f"{relative(out)}: no complete {MANIFEST} (the job has not finished)")
        paths = [out / part["file"] for part in manifest["parts"]]
    frames = []
    for path in paths:
        if path.suffix == ".parquet":
            frames.append(require_pyarrow().read_table(path).to_pandas())
        else:
            frames.append(pd.read_csv(path, dtype={"user": str, "item": str}, keep_default_na=False))
    return pd.concat(frames, ignore_index=True)
