"""The database lock: one holder at a time, named to whoever is refused, dropped by the OS when it dies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from storage.lock import DatabaseInUse, DatabaseLock, Holder, check_free, lock_path, read_holder
from tests.reliability.process import ROOT

HOLD = """
import sys, time
from storage.lock import DatabaseLock
lock = DatabaseLock.acquire(sys.argv[1], "run")
print("locked", flush=True)
time.sleep(120)
"""


def hold_in_child(database: Path) -> subprocess.Popen:
    """Another process that takes the lock and keeps it until killed."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(database)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    return child


def test_the_lock_file_sits_beside_the_database(tmp_path: Path) -> None:
    assert lock_path(tmp_path / "data" / "imagine.sqlite3") == tmp_path / "data" / "imagine.sqlite3.lock"


def test_a_second_taker_is_refused_with_the_holders_pid_host_and_start(tmp_path: Path) -> None:
    database = tmp_path / "data" / "imagine.sqlite3"
    before = datetime.now(UTC).replace(microsecond=0)
    with DatabaseLock.acquire(database, "run") as held:
        assert held.held and lock_path(database).exists()  # the folder is made if needed
        with pytest.raises(DatabaseInUse) as refused:
            DatabaseLock.acquire(database, "generate")  # a second descriptor conflicts, even in one process
    holder = refused.value.holder
    assert holder is not None
    assert (holder.pid, holder.host, holder.command) == (os.getpid(), socket.gethostname(), "run")
    assert before <= holder.since <= datetime.now(UTC)
    message = refused.value.message("[storage] path")
    assert message.startswith(f"another imagine-bot (`imagine-bot run`, pid {os.getpid()} on {socket.gethostname()}")
    assert f"since {holder.since:%Y-%m-%d %H:%M:%S} UTC" in message
    assert f"is running on the database {database} ([storage] path); stop it first" in message


def test_release_lets_the_next_one_in_and_clears_the_name(tmp_path: Path) -> None:
    database = tmp_path / "imagine.sqlite3"
    first = DatabaseLock.acquire(database, "run")
    first.release()
    first.release()  # idempotent
    assert not first.held
    assert read_holder(lock_path(database), timeout=0) is None  # nobody is named once it is free
    with DatabaseLock.acquire(database, "generate") as second:
        assert read_holder(lock_path(database), timeout=0) == second.holder


def test_another_process_holding_it_is_named_and_its_death_frees_it(tmp_path: Path) -> None:
    database = tmp_path / "imagine.sqlite3"
    child = hold_in_child(database)
    try:
        with pytest.raises(DatabaseInUse) as refused:
            DatabaseLock.acquire(database, "run")
        assert refused.value.holder is not None and refused.value.holder.pid == child.pid
    finally:
        os.kill(child.pid, signal.SIGKILL)  # no clean-up of any kind: the OS drops the lock
        child.wait(30)
    assert read_holder(lock_path(database), timeout=0).pid == child.pid  # its name is left behind…
    with DatabaseLock.acquire(database, "run") as taken:  # …but does not keep anyone out
        assert taken.holder.pid == os.getpid()
        assert read_holder(lock_path(database), timeout=0) == taken.holder


def test_a_holder_that_has_not_written_its_name_yet_is_still_a_holder(tmp_path: Path) -> None:
    import fcntl

    database = tmp_path / "imagine.sqlite3"
    path = lock_path(database)
    with path.open("w") as raw:
        fcntl.flock(raw.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # locked, nothing written
        assert read_holder(path, timeout=0) is None
        refused = DatabaseInUse(database, read_holder(path, timeout=0))
        assert refused.message() == (
            f"another imagine-bot is running on the database {database}; stop it first, "
            "or give this one a database of its own"
        )
        with pytest.raises(DatabaseInUse):
            DatabaseLock.acquire(database)


def test_holder_describes_itself_in_utc() -> None:
    holder = Holder(pid=7, host="gpu-box", since=datetime(2025, 6, 1, 12, 0, 3, tzinfo=UTC), command="")
    assert holder.describe() == "pid 7 on gpu-box, since 2025-06-01 12:00:03 UTC"


def test_a_quick_look_tells_whether_it_is_held_and_takes_nothing(tmp_path: Path) -> None:
    database = tmp_path / "imagine.sqlite3"
    check_free(database)  # never locked: no lock file yet
    assert not lock_path(database).exists()
    with DatabaseLock.acquire(database, "run") as held:
        with pytest.raises(DatabaseInUse) as refused:
            check_free(database)
        assert refused.value.holder == held.holder
        assert read_holder(lock_path(database), timeout=0) == held.holder  # the look changed nothing
    check_free(database)
    with DatabaseLock.acquire(database, "run"):  # and it left nothing held
        pass
