"""Every way a member can make a job, driven through the fake Discord, each answering with an Outcome."""

from __future__ import annotations

from dataclasses import dataclass

from tests.bot.conftest import button, custom_ids, has_image
from tests.fake_discord import FakeDiscord, FakeUser

EPHEMERAL = 64
ENTRY_POINTS = ("imagine", "reroll", "vary", "upscale", "edit", "menu", "reply")


@dataclass(frozen=True)
class Outcome:
    """What the member saw: queued (with the job), or a refusal and whether only they saw it."""

    queued: bool
    text: str
    private: bool  # ephemeral for interactions; for a reply remix, an error reply to that message
    job_id: int | None = None

    def __str__(self) -> str:
        return "queued" if self.queued else f"refused: {self.text}"


def _outcome(message: dict, private: bool) -> Outcome:
    content = message["content"]
    if "Queued" in content:
        cancel = next(c for c in custom_ids(message) if c.startswith("imagine:cancel:"))
        return Outcome(True, content, private, int(cancel.split(":")[2]))
    assert "⚠️" in content, content
    return Outcome(False, content, private)


async def _interaction(handle) -> Outcome:
    callback = await handle.wait_for_callback()
    if callback["type"] == 4:
        data = callback["data"]
        return _outcome(data, bool(data.get("flags", 0) & EPHEMERAL))
    # Deferred while a picture downloads: the queue message replaces "thinking…", or a private follow-up.
    message = await handle.wait_for_message(lambda m: "Queued" in m["content"] or "⚠️" in m["content"], timeout=15)
    return _outcome(message, bool(message["flags"] & EPHEMERAL))


class EntryPoints:
    """/imagine, the Reroll/Vary/Upscale buttons, the Edit modal, Apps › Remix and reply remix.

    The buttons, the menu and replies act on `result`, a finished two-image job.
    """

    def __init__(self, fake: FakeDiscord, result: dict) -> None:
        self.fake = fake
        self.result = result

    async def run(self, entry: str, user: FakeUser, *, imagine: dict | None = None, text: str | None = None) -> Outcome:
        """One entry point; `imagine` options for /imagine, `text` for the remix prompt (flags allowed)."""
        text = text or "a lighthouse at night"
        if entry == "imagine":
            return await self.imagine(user, **(imagine or {"prompt": "a lighthouse"}))
        if entry in ("reroll", "vary", "upscale"):
            return await self.click(entry, user)
        if entry == "edit":
            return await self.edit(user)
        if entry == "menu":
            return await self.menu(user, text)
        return await self.reply(user, text)

    async def imagine(self, user: FakeUser, channel_id: int | None = None, **options) -> Outcome:
        handle = await self.fake.send_slash_command("imagine", options, user=user, channel_id=channel_id)
        return await _interaction(handle)

    async def click(self, action: str, user: FakeUser) -> Outcome:
        handle = await self.fake.send_button_click(
            int(self.result["id"]), button(self.result, f"imagine:{action}"), user=user
        )
        return await _interaction(handle)

    async def edit(self, user: FakeUser, prompt: str | None = None) -> Outcome:
        click = await self.fake.send_button_click(
            int(self.result["id"]), button(self.result, "imagine:edit"), user=user
        )
        modal = await click.wait_for_modal()
        values = {"prompt": prompt} if prompt else {}  # unchanged fields keep the job's values
        submit = await self.fake.send_modal_submit(modal["custom_id"], values, user=user, opened_by=click)
        return await _interaction(submit)

    async def menu(self, user: FakeUser, prompt: str) -> Outcome:
        menu = await self.fake.send_message_command("Remix", int(self.result["id"]), user=user)
        modal = await menu.wait_for_modal()
        submit = await self.fake.send_modal_submit(
            modal["custom_id"], {"remix:prompt": prompt, "remix:strength": ""}, user=user, opened_by=menu
        )
        return await _interaction(submit)

    async def reply(self, user: FakeUser, text: str) -> Outcome:
        sent = await self.fake.post_user_message(text, reply_to=int(self.result["id"]), user=user)
        answer = await self.fake.wait_for_message(lambda m: replies_to(self.fake, m, sent), timeout=15)
        return _outcome(answer, private=True)


def replies_to(fake: FakeDiscord, candidate: dict, message: dict) -> bool:
    """Whether `candidate` is the bot's reply to `message`."""
    reference = candidate.get("message_reference") or {}
    return candidate["author"]["id"] == str(fake.bot_user.id) and reference.get("message_id") == message["id"]


async def make_result(running, **options) -> dict:
    """A finished job by the default member (two images unless told), to click, remix and reply to."""
    handle = await running.fake.send_slash_command(
        "imagine", {"prompt": "a lighthouse", "seed": 5, "count": 2} | options, user=running.fake.member
    )
    return await handle.wait_for_original(has_image, timeout=60)
