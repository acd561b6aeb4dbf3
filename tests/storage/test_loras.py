"""Trainings and the LoRA library, on a real SQLite file: photos by hash, progress, names, sharing, deletes."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import aiosqlite
import pytest
from PIL import Image

from storage import JobStatus, LoraNameTaken, Store, UnknownTraining
from storage.migrations import MIGRATIONS, apply_migrations
from tests.storage.factories import FakeClock, gradient, txt2img

SETTINGS = {"token": "sks", "class_word": "dog", "steps": 100, "rank": 4}


def photos(count: int = 3) -> list[Image.Image]:
    return [Image.new("RGB", (64, 64), (40 * i, 100, 200)) for i in range(count)]


async def new_training(store: Store, *, user_id: int = 7, name: str = "Rex", guild_id: int | None = 5, **extra):
    fields = {
        "user_id": user_id,
        "guild_id": guild_id,
        "name": name,
        "trigger_token": "sks",
        "class_word": "dog",
        "base_model": "tiny",
        "kind": "sd",
        "settings": SETTINGS,
        "total_steps": 100,
        "photos": photos(),
        "origin": {"kind": "interaction"},  # asked for on Discord (the command line's have none)
    }
    return await store.create_training(**(fields | extra))


async def finished_lora(store: Store, **kwargs):
    training = await new_training(store, **kwargs)
    assert await store.start_training(training.id)
    store.lora_file(training.id).parent.mkdir(parents=True, exist_ok=True)
    store.lora_file(training.id).write_bytes(b"pretend safetensors " + str(training.id).encode())
    return await store.finish_training(training.id)


async def test_a_training_keeps_its_photos_by_content_hash(store: Store, images_dir: Path) -> None:
    same = [gradient(), gradient(), photos(1)[0]]
    training = await new_training(store, photos=same, class_photos=[photos(2)[1]], channel_id=9)
    assert training.status is JobStatus.QUEUED and training.attempts == 0
    assert (training.steps_done, training.total_steps, training.checkpoint_path) == (0, 100, None)
    assert training.settings == SETTINGS and training.channel_id == 9
    assert training.photos[0].path == training.photos[1].path  # identical photos share one file
    for photo in training.photos:
        data = (images_dir / photo.path).read_bytes()
        assert photo.path.startswith("inputs/") and hashlib.sha256(data).hexdigest() == photo.sha256
    loaded, class_loaded = await store.load_training_photos(training)
    assert [image.tobytes() for image in loaded] == [image.tobytes() for image in same]
    assert len(class_loaded) == 1
    assert await store.get_training(training.id) == training
    assert await store.queued_trainings() == [training]


async def test_progress_is_recorded_per_chunk_while_running(store: Store, clock: FakeClock) -> None:
    training = await new_training(store)
    assert not await store.record_training_progress(training.id, steps_done=5, last_loss=1.0, checkpoint_written=True)
    assert await store.start_training(training.id)
    assert not await store.start_training(training.id)  # only a queued one starts
    clock.advance(minutes=1)
    assert await store.record_training_progress(training.id, steps_done=25, last_loss=0.5, checkpoint_written=True)
    assert await store.record_training_progress(training.id, steps_done=30, last_loss=0.25, checkpoint_written=False)
    now = await store.get_training(training.id)
    assert now is not None and now.status is JobStatus.RUNNING and now.attempts == 1
    assert (now.steps_done, now.last_loss) == (30, 0.25)
    assert now.checkpoint_path == store.checkpoint_relative(training.id) == f"trainings/{training.id}/checkpoint.pt"
    assert now.updated_at == clock.now and now.started_at is not None and now.started_at < clock.now


async def test_finishing_records_the_lora_and_drops_the_checkpoint(store: Store, images_dir: Path) -> None:
    training = await new_training(store)
    await store.start_training(training.id)
    checkpoint = store.checkpoint_file(training.id)
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"state")
    await store.record_training_progress(training.id, steps_done=100, last_loss=0.1, checkpoint_written=True)
    data = b"safetensors bytes"
    store.lora_file(training.id).parent.mkdir(parents=True)
    store.lora_file(training.id).write_bytes(data)

    lora = await store.finish_training(training.id, shared=True)
    assert (lora.name, lora.trigger_token, lora.base_model, lora.kind) == ("Rex", "sks", "tiny", "sd")
    assert (lora.owner_id, lora.guild_id, lora.shared, lora.training_id) == (7, 5, True, training.id)
    assert lora.sha256 == hashlib.sha256(data).hexdigest() and lora.size_bytes == len(data)
    assert store.lora_path(lora) == images_dir / lora.path and lora.deleted_at is None
    done = await store.get_training(training.id)
    assert done is not None and done.status is JobStatus.DONE and done.lora_id == lora.id
    assert done.steps_done == 100 and done.checkpoint_path is None and done.finished_at is not None
    assert not checkpoint.exists() and not checkpoint.parent.exists()
    assert await store.get_lora(lora.id) == lora
    assert await store.lora_by_name(7, "rEX") == lora


async def test_names_are_taken_per_owner_until_deleted(store: Store) -> None:
    training = await new_training(store)
    with pytest.raises(LoraNameTaken, match="already under way"):
        await new_training(store, name="rex")
    await store.cancel_training(training.id)
    lora = await finished_lora(store)
    with pytest.raises(LoraNameTaken, match="already have a LoRA named 'REX'"):
        await new_training(store, name="REX")
    other = await finished_lora(store, user_id=8)  # someone else's Rex is fine
    assert other.name == "Rex"

    assert await store.delete_lora(lora.id)
    assert not await store.delete_lora(lora.id)
    assert not store.lora_path(lora).exists()
    gone = await store.get_lora(lora.id)
    assert gone is not None and gone.deleted_at is not None
    assert await store.lora_by_name(7, "Rex") is None
    await new_training(store)  # the name is free again


async def test_loras_visible_to_a_user_are_their_own_and_those_shared_in_the_guild(store: Store) -> None:
    mine = await finished_lora(store, name="mine")
    theirs = await finished_lora(store, user_id=8, name="theirs")
    elsewhere = await finished_lora(store, user_id=9, name="elsewhere", guild_id=6)
    assert await store.loras_for(7, 5) == [mine]
    assert await store.set_lora_shared(theirs.id, True)
    assert not await store.set_lora_shared(theirs.id, True)  # no change
    await store.set_lora_shared(elsewhere.id, True)
    assert [lora.name for lora in await store.loras_for(7, 5)] == ["theirs", "mine"]
    await store.delete_lora(theirs.id)
    assert not await store.set_lora_shared(theirs.id, False)
    assert await store.loras_for(7, 5) == [mine]


async def test_a_cancelled_training_never_becomes_a_lora(store: Store) -> None:
    training = await new_training(store)
    await store.start_training(training.id)
    assert await store.cancel_training(training.id)
    store.lora_file(training.id).parent.mkdir(parents=True)
    store.lora_file(training.id).write_bytes(b"late")
    with pytest.raises(UnknownTraining, match="not running"):
        await store.finish_training(training.id)
    assert await store.lora_by_name(7, "Rex") is None
    with pytest.raises(UnknownTraining):
        await store.finish_training(999)


async def test_failures_and_restarts(store: Store) -> None:
    failing = await new_training(store, name="a")
    await store.start_training(failing.id)
    assert await store.fail_training(failing.id, "The GPU ran out of memory.")
    assert not await store.fail_training(failing.id, "again")
    failed = await store.get_training(failing.id)
    assert failed is not None and failed.status is JobStatus.FAILED and failed.error == "The GPU ran out of memory."

    resumable, exhausted = await new_training(store, name="b"), await new_training(store, name="c")
    for training in (resumable, exhausted):
        await store.start_training(training.id)
    async with store._db.write() as db:  # as if "c" had been interrupted twice already
        await db.execute("UPDATE trainings SET attempts = 3 WHERE id = ?", (exhausted.id,))
    requeued, given_up = await store.requeue_interrupted_trainings(max_attempts=3)
    assert [t.id for t in requeued] == [resumable.id] and requeued[0].status is JobStatus.QUEUED
    assert [t.id for t in given_up] == [exhausted.id]
    assert given_up[0].error == "Training was interrupted 3 time(s); giving up."
    assert await store.start_training(resumable.id)


async def test_an_existing_v1_database_gains_the_tables_and_keeps_its_jobs(db_path: Path, images_dir: Path) -> None:
    db_path.parent.mkdir(parents=True)
    request = txt2img()
    async with aiosqlite.connect(db_path, isolation_level=None) as db:
        await apply_migrations(db, MIGRATIONS[:1])
        # A job as the version-1 bot wrote it (later migrations add columns to jobs, so no Store of today).
        await db.execute(
            "INSERT INTO jobs (user_id, prompt, negative_prompt, model, mode, params, created_at) "
            "VALUES (1, ?, '', ?, 'txt2img', ?, '2025-01-01T00:00:00.000000+00:00')",
            (request.prompt, request.model, json.dumps(request.params(), sort_keys=True)),
        )
    async with await Store.open(db_path, images_dir) as store:
        job = await store.get_job(1)
        assert job is not None and job.status is JobStatus.QUEUED
        assert await store.load_request(job) == request
        assert (await new_training(store)).id == 1
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) >= 2
