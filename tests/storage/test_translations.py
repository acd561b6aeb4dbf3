"""Translated prompts in the store: recorded with the finished job, searchable by either text, and migration 4 on a
database that already holds jobs."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import aiosqlite

from generation.translation import Translation
from storage import Store
from storage.migrations import MIGRATIONS, apply_migrations
from tests.storage.factories import generated, txt2img

FRENCH = "un renard roux dans la neige"
ENGLISH = "a red fox in the snow"


def _translated(translation: Translation, index: int = 0):
    return replace(generated(index), translation=translation)


async def _ids(jobs) -> list[int]:
    return [job.id for job in await jobs]


async def _fts_agrees(store: Store) -> None:
    async with store._db.connection.execute("INSERT INTO jobs_fts (jobs_fts) VALUES ('integrity-check')"):
        pass  # raises if the full-text index disagrees with the jobs table


async def test_a_translated_job_keeps_both_texts_and_is_found_by_either(store: Store) -> None:
    job = await store.create_job(txt2img(FRENCH, negative_prompt="flou"), user_id=1, guild_id=2, channel_id=3)
    other = await store.create_job(txt2img("an owl at night"), user_id=1, guild_id=2, channel_id=3)
    assert job.translated_prompt is None and job.prompt_language is None  # known once it has run
    await store.mark_running([job.id, other.id])
    translation = Translation("French", ENGLISH, "blurry", FRENCH, "flou")
    await store.finish_job(job.id, [_translated(translation, 0), _translated(translation, 1)])
    await store.finish_job(other.id, [generated()])

    done = await store.get_job(job.id)
    assert (done.prompt, done.negative_prompt) == (FRENCH, "flou")  # what was typed stays the job's prompt
    assert (done.prompt_language, done.translated_prompt, done.translated_negative) == ("French", ENGLISH, "blurry")
    assert (await store.get_job(other.id)).translated_prompt is None
    assert await _ids(store.search_jobs("renard neige")) == [job.id]
    assert await _ids(store.search_jobs("fox snow")) == [job.id]
    assert await _ids(store.search_jobs("blurry")) == []
    assert await _ids(store.search_jobs("blurry", include_negative=True)) == [job.id]
    assert await _ids(store.search_jobs("flou", include_negative=True)) == [job.id]
    await _fts_agrees(store)


async def test_only_the_translated_text_is_recorded(store: Store) -> None:
    job = await store.create_job(txt2img(ENGLISH, negative_prompt="flou"), user_id=1, guild_id=None, channel_id=None)
    await store.mark_running([job.id])
    await store.finish_job(job.id, [_translated(Translation("French", ENGLISH, "blurry", ENGLISH, "flou"))])
    done = await store.get_job(job.id)
    assert (done.prompt_language, done.translated_prompt, done.translated_negative) == ("French", None, "blurry")


async def test_a_cancelled_job_records_no_translation(store: Store) -> None:
    job = await store.create_job(txt2img(FRENCH), user_id=1, guild_id=None, channel_id=None)
    await store.mark_running([job.id])
    await store.cancel_job(job.id)
    assert await store.finish_job(job.id, [_translated(Translation("French", ENGLISH, "", FRENCH, ""))]) == []
    assert (await store.get_job(job.id)).translated_prompt is None
    assert await _ids(store.search_jobs("fox")) == []


async def test_migration_4_keeps_old_jobs_searchable(db_path: Path, images_dir: Path) -> None:
    db_path.parent.mkdir(parents=True)
    async with aiosqlite.connect(db_path, isolation_level=None) as db:
        assert await apply_migrations(db, MIGRATIONS[:3]) == 3
        await db.execute(
            "INSERT INTO jobs (user_id, prompt, negative_prompt, model, mode, params, created_at) "
            "VALUES (1, 'an old fox', 'grainy', 'tiny', 'txt2img', '{}', '2025-01-01T00:00:00.000000+00:00')"
        )
    async with await Store.open(db_path, images_dir) as store:
        assert await _ids(store.search_jobs("fox")) == [1]
        assert await _ids(store.search_jobs("grainy", include_negative=True)) == [1]
        assert (await store.get_job(1)).translated_prompt is None
        await _fts_agrees(store)
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
