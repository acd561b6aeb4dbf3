"""History: per user, per guild, recent, and full-text search that any user text cannot break."""

from __future__ import annotations

import pytest

from storage import Store
from storage.search import fts_query
from tests.storage.factories import txt2img


async def _make(store: Store, prompt: str, *, user: int = 1, guild: int | None = 10, negative: str = "") -> int:
    job = await store.create_job(txt2img(prompt, negative_prompt=negative), user_id=user, guild_id=guild, channel_id=5)
    return job.id


async def _ids(jobs: object) -> list[int]:
    return [job.id for job in await jobs]  # type: ignore[attr-defined]


async def test_lists_are_newest_first_and_paged(store: Store) -> None:
    a = await _make(store, "one", user=1, guild=10)
    b = await _make(store, "two", user=2, guild=10)
    c = await _make(store, "three", user=1, guild=None)
    d = await _make(store, "four", user=1, guild=11)
    assert await _ids(store.recent_jobs()) == [d, c, b, a]
    assert await _ids(store.recent_jobs(limit=2, offset=1)) == [c, b]
    assert await _ids(store.jobs_by_user(1)) == [d, c, a]
    assert await _ids(store.jobs_by_user(1, 10)) == [a]
    assert await _ids(store.jobs_by_user(1, limit=1, offset=1)) == [c]
    assert await _ids(store.jobs_by_guild(10)) == [b, a]


async def test_search_finds_every_word_in_any_order(store: Store) -> None:
    fox = await _make(store, "A red fox jumping over snow")
    owl = await _make(store, "an owl in the snow, at night", user=2)
    assert await _ids(store.search_jobs("snow")) == [owl, fox]
    assert await _ids(store.search_jobs("SNOW fox")) == [fox]
    assert await _ids(store.search_jobs("jump*")) == [fox]
    assert await _ids(store.search_jobs("snow", user_id=2)) == [owl]
    assert await _ids(store.search_jobs("snow", guild_id=99)) == []
    assert await _ids(store.search_jobs("cat")) == []


async def test_search_ignores_negative_prompts_unless_asked(store: Store) -> None:
    job = await _make(store, "portrait of a cat", negative="blurry, watermark")
    assert await _ids(store.search_jobs("blurry")) == []
    assert await _ids(store.search_jobs("blurry", include_negative=True)) == [job]


async def test_search_handles_accents_and_unicode(store: Store) -> None:
    job = await _make(store, "café in Zürich, 東京")
    assert await _ids(store.search_jobs("cafe zurich")) == [job]


@pytest.mark.parametrize(
    "text",
    [
        'fox"',
        '"fox',
        '""',
        "fox AND",
        "NOT fox",
        "OR",
        "fox -snow",
        "prompt: fox",
        "{prompt}",
        "(fox",
        "fox)",
        "^fox",
        "NEAR(fox snow)",
        "fox*snow",
        "***",
        "'; DROP TABLE jobs; --",
        "   ",
        "",
        "🦊",
    ],
)
async def test_search_never_raises_on_user_text(store: Store, text: str) -> None:
    await _make(store, "fox snow NOT AND OR prompt")
    assert isinstance(await store.search_jobs(text), list)
    assert await store.get_job(1) is not None


async def test_punctuation_is_searched_as_text(store: Store) -> None:
    job = await _make(store, 'a "glowing" fox; (cinematic) -- 8k')
    assert await _ids(store.search_jobs('"glowing" (cinematic)')) == [job]
    assert await _ids(store.search_jobs("8k fox!!")) == [job]
    assert await _ids(store.search_jobs("!!!")) == []


def test_fts_query_quotes_every_word() -> None:
    assert fts_query('say "hi" now*') == '{prompt translated_prompt} : ("say" """hi""" "now"*)'
    assert fts_query("- ! ?") is None


async def test_direct_messages_only_and_active_jobs(store: Store) -> None:
    in_guild = await _make(store, "fox in a guild", user=1, guild=10)
    in_dm = await _make(store, "fox in a dm", user=1, guild=None)
    other = await _make(store, "fox of someone else", user=2, guild=None)
    assert await _ids(store.jobs_by_user(1, dms_only=True)) == [in_dm]
    assert await _ids(store.jobs_by_user(1, 10, dms_only=True)) == [in_guild]  # a guild wins over dms_only
    assert await _ids(store.search_jobs("fox", user_id=1, dms_only=True)) == [in_dm]
    assert await store.cancel_job(in_dm)
    assert await _ids(store.active_jobs(1)) == [in_guild]
    assert await _ids(store.active_jobs(2)) == [other]
