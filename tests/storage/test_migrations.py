"""Schema set-up: fresh files, reopening, atomic migrations, and the connection's pragmas."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from storage import SchemaTooNew, Store
from storage.migrations import MIGRATIONS, apply_migrations, schema_version
from tests.storage.factories import txt2img

TABLES = {"jobs", "images", "guild_settings", "settings_audit", "usage", "jobs_fts"}


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _user_version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA user_version").fetchone()[0]


async def test_fresh_file_gets_every_migration(db_path: Path, images_dir: Path) -> None:
    async with await Store.open(db_path, images_dir):
        pass
    assert db_path.exists() and images_dir.is_dir()
    assert _user_version(db_path) == len(MIGRATIONS)
    assert _tables(db_path) >= TABLES


async def test_reopening_is_idempotent_and_keeps_data(db_path: Path, images_dir: Path) -> None:
    async with await Store.open(db_path, images_dir) as store:
        job = await store.create_job(txt2img(), user_id=1, guild_id=2, channel_id=3)
    for _ in range(2):
        async with await Store.open(db_path, images_dir) as store:
            assert await store.get_job(job.id) == job
    assert _user_version(db_path) == len(MIGRATIONS)


async def test_connection_pragmas(store: Store) -> None:
    db = store._db.connection
    for pragma, expected in [("journal_mode", "wal"), ("foreign_keys", 1), ("busy_timeout", 10_000)]:
        async with db.execute(f"PRAGMA {pragma}") as cursor:
            assert (await cursor.fetchone())[0] == expected, pragma


async def test_integrity_check_is_ok(store: Store) -> None:
    await store.create_job(txt2img(), user_id=1, guild_id=None, channel_id=None)
    async with store._db.connection.execute("PRAGMA integrity_check") as cursor:
        assert [tuple(row) for row in await cursor.fetchall()] == [("ok",)]
    async with store._db.connection.execute("INSERT INTO jobs_fts (jobs_fts) VALUES ('integrity-check')"):
        pass  # raises if the full-text index disagrees with the jobs table


async def test_failed_migration_rolls_back_whole(tmp_path: Path) -> None:
    good = ["CREATE TABLE a (x INTEGER)"]
    bad = ["CREATE TABLE b (x INTEGER)", "INSERT INTO a VALUES (1)", "THIS IS NOT SQL"]
    async with aiosqlite.connect(tmp_path / "m.sqlite3", isolation_level=None) as db:
        with pytest.raises(sqlite3.OperationalError):
            await apply_migrations(db, [good, bad])
        assert await schema_version(db) == 1
        async with db.execute("SELECT name FROM sqlite_master WHERE name = 'b'") as cursor:
            assert await cursor.fetchone() is None
        async with db.execute("SELECT count(*) FROM a") as cursor:
            assert (await cursor.fetchone())[0] == 0


async def test_newer_schema_is_refused(db_path: Path, images_dir: Path) -> None:
    async with await Store.open(db_path, images_dir):
        pass
    with sqlite3.connect(db_path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(SchemaTooNew):
        await Store.open(db_path, images_dir)
