"""Where a study lives, and which of its trials are still alive: the storage side of `helpers.tune`.

- `open_storage`: a SQLite file in the study's folder by default (an embedded database, nothing to start); any
  database URL Optuna accepts (`postgresql://...`, `mysql://...`), whose workers send a heartbeat so that a trial
  of a machine that died is failed by the others; or the path of an Optuna journal file on a shared file system.
- A trial that was failed because its worker died is queued again with the same settings and the same run folder
  (`retry`), so its run resumes from its last checkpoint; it is never counted as complete.
- `fail_dead_trials`: a relaunch on the machine that was killed fails at once the trials its dead processes left
  running (by host and process id), instead of waiting for a heartbeat.
- `Counts`: how many of the study's trials count towards its total (complete or pruned), run or wait.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from helpers.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no lock; the retry below still covers the race
    fcntl = None  # type: ignore[assignment]

#: The default storage's file, in the study's folder.
SQLITE_FILE = "study.db"
#: Seconds between a worker's heartbeats, and without one after which its running trial is failed (database URLs).
HEARTBEAT_S, GRACE_S = 60, 180
#: Seconds a SQLite writer waits for another process's lock before failing (several workers on one file).
SQLITE_TIMEOUT_S = 60
#: Times a worker tries to open a new database that another worker is creating at the same instant.
CREATE_ATTEMPTS = 5
#: What the error of a worker that lost the race to create a new database's tables says.
CREATION_RACE = ("already exists", "UNIQUE constraint failed", "duplicate key")
#: Trials that count towards the study's total.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

@contextmanager
def _creation_lock(url: str) -> Iterator[None]:
    """An exclusive lock on `FILE.lock` beside a SQLite database file while it is opened (created, the first
    time); nothing for other databases, or where the system has no `fcntl`."""
    if not url.startswith("sqlite:///") or fcntl is None:
        yield
        return
    lock = Path(url.removeprefix("sqlite:///") + ".lock")
    if not lock.parent.is_dir():  # the database's own error says so
        yield
        return
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def default_url(out: Path) -> str:
    """The SQLite file of a study in `out`."""
    return f"sqlite:///{(out / SQLITE_FILE).resolve()}"


def retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a failed trial again: the same settings and user attributes (its run folder), so it resumes."""
    with warnings.catch_warnings():  # Optuna calls its retry callback experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback()(study, trial)


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The storage at `url` (a database URL, or a journal file's path), or a one-line `ConfigError` saying why not."""
    try:
        if "://" not in url:
            path = Path(url)
            if not path.parent.is_dir():
                raise ConfigError(f"storage {url} cannot be reached: the folder {path.parent} does not exist")
            return JournalStorage(JournalFileBackend(str(path)))
        engine = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else {}
        # Workers started at once on a new database race to create its tables (the loser finds a table, or the
        # schema's version row, that the winner has just written). On a SQLite file a lock beside it lets one
        # process create them at a time; on a server the loser opens the database again, once the tables exist.
        with _creation_lock(url):
            for attempt in range(CREATE_ATTEMPTS):
                try:
                    with warnings.catch_warnings():  # Optuna calls the heartbeat experimental
                        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                        return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S,
                                          grace_period=GRACE_S, heartbeat_stale_trial_callback=retry)
                except Exception as err:
                    if not any(word in str(err) for word in CREATION_RACE) or attempt == CREATE_ATTEMPTS - 1:
                        raise
                    time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")
    except ConfigError:
        raise
    except Exception as err:  # sqlalchemy's errors, a missing database driver, a malformed URL: all one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"storage {url} cannot be reached: {first}") from None


def this_host() -> str:
    """This machine: its name and, on Linux, its boot id (containers often share a host name)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}" if boot else socket.gethostname()


def alive(pid: int) -> bool:
    """Is process `pid` running on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Fail (and queue again) the running trials of this machine whose process is gone; their numbers."""
    host, failed = this_host(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs: dict[str, Any] = trial.user_attrs
        if attrs.get("host") != host or "pid" not in attrs or alive(int(attrs["pid"])):
            continue
        try:
            if study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                failed.append(trial.number)
                retry(study, study._storage.get_trial(trial._trial_id))
        except optuna.exceptions.UpdateFinishedTrialError:  # another process failed it first
            pass
    return failed


@dataclass
class Counts:
    """The study's trials by what they mean for its total."""

    finished: int  # complete or pruned: counted towards the total
    running: int
    waiting: int  # queued, e.g. a failed trial to resume

    @classmethod
    def of(cls, study: optuna.Study) -> Counts:
        """Count the study's trials now."""
        states = [t.state for t in study.get_trials(deepcopy=False)]
        return cls(sum(s in FINISHED for s in states), states.count(TrialState.RUNNING),
                   states.count(TrialState.WAITING))

    def full(self, total: int) -> bool:
        """No trial left to start: the total is reached by trials finished or running, and none waits."""
        return self.waiting == 0 and self.finished + self.running >= total


def trials_ahead(study: optuna.Study, number: int) -> int:
    """Trials numbered before `number` that count or may still count towards the total (not failed)."""
    live = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)
    return sum(1 for t in study.get_trials(deepcopy=False, states=live) if t.number < number)
