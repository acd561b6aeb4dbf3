"""Numbered schema migrations, applied at start-up, each in its own transaction.

`PRAGMA user_version` holds the number of the last migration applied. Never edit a migration that
has shipped: append a new one. Each is a list of statements (not a script) because
`executescript` would commit our transaction before running.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiosqlite

_V1_INITIAL = [
    """
    CREATE TABLE jobs (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id         INTEGER NOT NULL,
        guild_id        INTEGER,             -- NULL: a direct message
        channel_id      INTEGER,
        prompt          TEXT NOT NULL,
        negative_prompt TEXT NOT NULL DEFAULT '',
        model           TEXT NOT NULL,
        mode            TEXT NOT NULL CHECK (mode IN ('txt2img', 'img2img', 'inpaint')),
        params          TEXT NOT NULL,       -- JSON of GenerationRequest.params()
        init_path       TEXT,                -- relative to images_dir
        mask_path       TEXT,
        status          TEXT NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        error           TEXT,                -- shown to the requester
        weight          REAL NOT NULL DEFAULT 1.0,
        origin          TEXT,                -- opaque JSON owned by the bot
        source_job_id   INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
        source_index    INTEGER,
        created_at      TEXT NOT NULL,
        started_at      TEXT,
        finished_at     TEXT,
        delivered_at    TEXT,
        delivered_where TEXT
    )
    """,
    "CREATE INDEX jobs_by_status ON jobs (status, id)",
    "CREATE INDEX jobs_by_user ON jobs (user_id, id)",
    "CREATE INDEX jobs_by_guild ON jobs (guild_id, id)",
    """
    CREATE INDEX jobs_undelivered ON jobs (id)
    WHERE delivered_at IS NULL AND status IN ('done', 'failed')
    """,
    """
    CREATE TABLE images (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id      INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        idx         INTEGER NOT NULL,
        seed        INTEGER NOT NULL,
        path        TEXT NOT NULL,           -- relative to images_dir
        sha256      TEXT NOT NULL,
        width       INTEGER NOT NULL,
        height      INTEGER NOT NULL,
        size_bytes  INTEGER NOT NULL,
        nsfw        INTEGER,                 -- NULL: no safety checker ran
        created_at  TEXT NOT NULL,
        deleted_at  TEXT,                    -- the file is gone; the row stays for history
        UNIQUE (job_id, idx)
    )
    """,
    """
    CREATE TABLE guild_settings (
        guild_id    INTEGER NOT NULL,
        key         TEXT NOT NULL,
        value       TEXT NOT NULL,           -- JSON
        updated_at  TEXT NOT NULL,
        updated_by  INTEGER NOT NULL,
        PRIMARY KEY (guild_id, key)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE settings_audit (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        guild_id    INTEGER NOT NULL,
        user_id     INTEGER NOT NULL,
        key         TEXT NOT NULL,
        old         TEXT,                    -- JSON; NULL: was unset
        new         TEXT,                    -- JSON; NULL: reset to default
        at          TEXT NOT NULL
    )
    """,
    "CREATE INDEX settings_audit_by_guild ON settings_audit (guild_id, id)",
    # guild_id 0 stands for DMs: a NULL in a primary key would never collide, so counts would split.
    """
    CREATE TABLE usage (
        user_id     INTEGER NOT NULL,
        guild_id    INTEGER NOT NULL,
        day         TEXT NOT NULL,           -- UTC date, YYYY-MM-DD
        jobs        INTEGER NOT NULL DEFAULT 0,
        images      INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (user_id, guild_id, day)
    ) WITHOUT ROWID
    """,
    # External-content FTS: the text lives once, in jobs; triggers keep the index in step.
    """
    CREATE VIRTUAL TABLE jobs_fts USING fts5(
        prompt, negative_prompt,
        content='jobs', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
    )
    """,
    """
    CREATE TRIGGER jobs_fts_insert AFTER INSERT ON jobs BEGIN
        INSERT INTO jobs_fts (rowid, prompt, negative_prompt)
        VALUES (new.id, new.prompt, new.negative_prompt);
    END
    """,
    """
    CREATE TRIGGER jobs_fts_delete AFTER DELETE ON jobs BEGIN
        INSERT INTO jobs_fts (jobs_fts, rowid, prompt, negative_prompt)
        VALUES ('delete', old.id, old.prompt, old.negative_prompt);
    END
    """,
    """
    CREATE TRIGGER jobs_fts_update AFTER UPDATE OF prompt, negative_prompt ON jobs BEGIN
        INSERT INTO jobs_fts (jobs_fts, rowid, prompt, negative_prompt)
        VALUES ('delete', old.id, old.prompt, old.negative_prompt);
        INSERT INTO jobs_fts (rowid, prompt, negative_prompt)
        VALUES (new.id, new.prompt, new.negative_prompt);
    END
    """,
]

# Dreambooth LoRA: a training is its own durable job (the jobs table's mode CHECK only knows image
# modes), and what it produces is a row in the LoRA library. Files live under the store's files root.
_V2_LORAS = [
    """
    CREATE TABLE trainings (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,   -- the training job's id
        user_id         INTEGER NOT NULL,
        guild_id        INTEGER,             -- NULL: a direct message or the command line
        channel_id      INTEGER,
        name            TEXT NOT NULL,       -- the LoRA's name once trained
        trigger_token   TEXT NOT NULL,
        class_word      TEXT NOT NULL,
        base_model      TEXT NOT NULL,
        kind            TEXT NOT NULL,       -- the base model's kind: sd or sdxl
        settings        TEXT NOT NULL,       -- JSON of generation.training.TrainingSettings
        photos          TEXT NOT NULL,       -- JSON list of {path, sha256}, content-addressed inputs
        class_photos    TEXT NOT NULL DEFAULT '[]',
        status          TEXT NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
        steps_done      INTEGER NOT NULL DEFAULT 0,
        total_steps     INTEGER NOT NULL CHECK (total_steps > 0),
        checkpoint_path TEXT,                -- relative to the files root; the last chunk's state
        last_loss       REAL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        error           TEXT,
        lora_id         INTEGER REFERENCES loras(id) ON DELETE SET NULL,
        created_at      TEXT NOT NULL,
        started_at      TEXT,
        updated_at      TEXT,
        finished_at     TEXT
    )
    """,
    "CREATE INDEX trainings_by_status ON trainings (status, id)",
    "CREATE INDEX trainings_by_user ON trainings (user_id, id)",
    """
    CREATE TABLE loras (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        name            TEXT NOT NULL,
        trigger_token   TEXT NOT NULL,
        base_model      TEXT NOT NULL,
        kind            TEXT NOT NULL,       -- the kind of model it applies to: sd or sdxl
        path            TEXT NOT NULL,       -- relative to the files root
        sha256          TEXT NOT NULL,
        size_bytes      INTEGER NOT NULL,
        owner_id        INTEGER NOT NULL,
        guild_id        INTEGER,             -- where it was made; shared means usable by that guild
        shared          INTEGER NOT NULL DEFAULT 0 CHECK (shared IN (0, 1)),
        training_id     INTEGER REFERENCES trainings(id) ON DELETE SET NULL,
        created_at      TEXT NOT NULL,
        deleted_at      TEXT                 -- the file is gone; the row stays for history
    )
    """,
    # A name is taken per owner while the LoRA exists; a deleted one frees it.
    "CREATE UNIQUE INDEX loras_live_name ON loras (owner_id, name COLLATE NOCASE) WHERE deleted_at IS NULL",
    "CREATE INDEX loras_by_guild ON loras (guild_id, id) WHERE shared = 1 AND deleted_at IS NULL",
]

# Trainings asked for on Discord: where to report (as jobs keep it), the sample images made at the end, and
# when the final message went out, so delivery survives a restart.
_V3_TRAINING_DELIVERY = [
    "ALTER TABLE trainings ADD COLUMN origin TEXT",  # JSON: interaction or message to edit
    "ALTER TABLE trainings ADD COLUMN samples TEXT NOT NULL DEFAULT '[]'",  # JSON list of relative paths
    "ALTER TABLE trainings ADD COLUMN delivered_at TEXT",
    "CREATE INDEX trainings_undelivered ON trainings (id) WHERE delivered_at IS NULL AND origin IS NOT NULL",
]

# Prompts in any language: what the text encoders read when the prompt was translated (NULL: as typed), and the
# language it was read as. The full-text index is made anew over all four texts, so a search finds a job by
# what was typed or by its English; FTS5 cannot add a column, and 'rebuild' fills it from the jobs table.
_V4_TRANSLATIONS = [
    "ALTER TABLE jobs ADD COLUMN prompt_language TEXT",  # e.g. 'French'
    "ALTER TABLE jobs ADD COLUMN translated_prompt TEXT",
    "ALTER TABLE jobs ADD COLUMN translated_negative TEXT",
    "DROP TRIGGER jobs_fts_insert",
    "DROP TRIGGER jobs_fts_delete",
    "DROP TRIGGER jobs_fts_update",
    "DROP TABLE jobs_fts",
    """
    CREATE VIRTUAL TABLE jobs_fts USING fts5(
        prompt, negative_prompt, translated_prompt, translated_negative,
        content='jobs', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
    )
    """,
    """
    CREATE TRIGGER jobs_fts_insert AFTER INSERT ON jobs BEGIN
        INSERT INTO jobs_fts (rowid, prompt, negative_prompt, translated_prompt, translated_negative)
        VALUES (new.id, new.prompt, new.negative_prompt, new.translated_prompt, new.translated_negative);
    END
    """,
    """
    CREATE TRIGGER jobs_fts_delete AFTER DELETE ON jobs BEGIN
        INSERT INTO jobs_fts (jobs_fts, rowid, prompt, negative_prompt, translated_prompt, translated_negative)
        VALUES ('delete', old.id, old.prompt, old.negative_prompt, old.translated_prompt, old.translated_negative);
    END
    """,
    """
    CREATE TRIGGER jobs_fts_update
    AFTER UPDATE OF prompt, negative_prompt, translated_prompt, translated_negative ON jobs BEGIN
        INSERT INTO jobs_fts (jobs_fts, rowid, prompt, negative_prompt, translated_prompt, translated_negative)
        VALUES ('delete', old.id, old.prompt, old.negative_prompt, old.translated_prompt, old.translated_negative);
        INSERT INTO jobs_fts (rowid, prompt, negative_prompt, translated_prompt, translated_negative)
        VALUES (new.id, new.prompt, new.negative_prompt, new.translated_prompt, new.translated_negative);
    END
    """,
    "INSERT INTO jobs_fts (jobs_fts) VALUES ('rebuild')",
]

MIGRATIONS: list[list[str]] = [_V1_INITIAL, _V2_LORAS, _V3_TRAINING_DELIVERY, _V4_TRANSLATIONS]
"""MIGRATIONS[n - 1] takes the schema from version n - 1 to n."""


class SchemaTooNew(RuntimeError):
    """The database was written by a newer version of the bot."""


async def schema_version(db: aiosqlite.Connection) -> int:
    """The number of the last migration applied to this database."""
    async with db.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def apply_migrations(db: aiosqlite.Connection, migrations: Sequence[Sequence[str]] = MIGRATIONS) -> int:
    """Bring the schema up to date, one transaction per migration; returns the final version."""
    latest = len(migrations)
    for version, statements in enumerate(migrations, start=1):
        # IMMEDIATE takes the write lock before reading the version, so two processes starting
        # together cannot both apply the same migration.
        await db.execute("BEGIN IMMEDIATE")
        try:
            current = await schema_version(db)
            if current > latest:
                raise SchemaTooNew(
                    f"The database is at schema version {current} but this code knows only up to {latest}."
                )
            if current < version:
                for statement in statements:
                    await db.execute(statement)
                # PRAGMA takes no parameters; `version` is our own int, never user input.
                await db.execute(f"PRAGMA user_version = {int(version)}")
        except BaseException:
            await db.rollback()
            raise
        await db.commit()
    return await schema_version(db)
