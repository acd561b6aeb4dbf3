"""/history, /queue and /cancel: looking back at jobs and managing the ones still waiting."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.answers import answer_error, answer_unexpected, is_moderator, may_manage
from bot.render import NO_MENTIONS
from bot.retry import CHANNEL_GONE, SERVER_LEFT, UNDELIVERABLE
from storage.records import JobRecord, JobStatus
from storage.store import Store

if TYPE_CHECKING:
    from bot.app import ImagineBot


PAGE_SIZE = 8
PAGER_TIMEOUT = 600.0  # seconds; well inside the 15 minutes an interaction token lives
PROMPT_SHOWN = 60
STATUS_ICONS = {
    JobStatus.QUEUED: "⏳",
    JobStatus.RUNNING: "🎨",
    JobStatus.DONE: "✅",
    JobStatus.FAILED: "⚠️",
    JobStatus.CANCELLED: "🚫",
}
MODERATORS_ONLY = "Only moderators (Manage Server or Manage Messages) can see someone else's history."
UNDELIVERABLE_TEXT = {
    CHANNEL_GONE: "could not be delivered: the channel is gone",
    SERVER_LEFT: "could not be delivered: the bot was removed from that server",
}


def message_link(job: JobRecord) -> str | None:
    """A link to the message that shows the job's result, when we know which one it is."""
    origin = job.origin or {}
    where = job.delivered_where or ""
    if where.startswith(UNDELIVERABLE):
        return None  # it never reached a message
    # A result posted anew (the original could not be edited) lives in that new message.
    message_id = where.removeprefix("channel:") if where.startswith("channel:") else origin.get("message_id")
    channel_id = origin.get("channel_id") or job.channel_id
    if not message_id or not channel_id:
        return None
    return f"https://discord.com/channels/{job.guild_id or '@me'}/{channel_id}/{message_id}"


def history_line(job: JobRecord) -> str:
    """`#12` · 3 minutes ago · ✅ done · prompt · seed 7 · model · [result](link)"""
    parts = [
        f"`#{job.id}`",
        discord.utils.format_dt(job.created_at, "R"),
        f"{STATUS_ICONS[job.status]} {job.status.value}",
        render.safe_text(job.prompt, PROMPT_SHOWN),
        f"seed {job.params.get('seed', '?')}",
        render.safe_text(job.model, 40),
    ]
    link = message_link(job)
    where = job.delivered_where or ""
    if where.startswith(UNDELIVERABLE):
        parts.append(UNDELIVERABLE_TEXT.get(where, "could not be delivered"))
    elif link:
        parts.append(f"[{'result' if job.status is JobStatus.DONE else 'message'}]({link})")
    return " · ".join(parts)


@dataclass(frozen=True)
class HistoryQuery:
    """Whose jobs, where (None: direct messages), and an optional full-text search."""

    user_id: int
    guild_id: int | None
    search: str | None = None

    async def page(self, store: Store, page: int) -> tuple[list[JobRecord], bool]:
        """The jobs on page `page` (0-based), newest first, and whether another page follows."""
        scope = {"guild_id": self.guild_id, "dms_only": self.guild_id is None}
        limit, offset = PAGE_SIZE + 1, page * PAGE_SIZE
        if self.search:
            jobs = await store.search_jobs(self.search, user_id=self.user_id, limit=limit, offset=offset, **scope)
        else:
            jobs = await store.jobs_by_user(self.user_id, limit=limit, offset=offset, **scope)
        return jobs[:PAGE_SIZE], len(jobs) > PAGE_SIZE


class HistoryPager(discord.ui.View):
    """◀ Prev / Next ▶ over a HistoryQuery; only the person who asked can turn pages."""

    def __init__(self, store: Store, query: HistoryQuery, title: str, owner_id: int) -> None:
        super().__init__(timeout=PAGER_TIMEOUT)
        self.store, self.query, self.title, self.owner_id = store, query, title, owner_id
        self.page = 0
        self.jobs: list[JobRecord] = []
        self.opened_by: discord.Interaction | None = None

    async def load(self, page: int) -> None:
        """Fetch a page and enable the buttons that still lead somewhere."""
        self.jobs, has_next = await self.query.page(self.store, page)
        self.page = page
        self.newer.disabled = page == 0
        self.older.disabled = not has_next

    def embed(self) -> discord.Embed:
        """The current page."""
        embed = discord.Embed(title=self.title, description="\n".join(history_line(job) for job in self.jobs))
        return embed.set_footer(text=f"Page {self.page + 1} · newest first")

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """Pages belong to whoever ran /history."""
        if interaction.user.id == self.owner_id:
            return True
        await answer_error(interaction, "Only the person who ran /history can turn its pages.")
        return False

    @discord.ui.button(label="◀ Prev", style=discord.ButtonStyle.secondary)
    async def newer(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        """One page newer."""
        await self._turn(interaction, max(0, self.page - 1))

    @discord.ui.button(label="Next ▶", style=discord.ButtonStyle.secondary)
    async def older(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        """One page older."""
        await self._turn(interaction, self.page + 1)

    async def _turn(self, interaction: discord.Interaction, page: int) -> None:
        await self.load(page)
        if not self.jobs and page > 0:  # jobs vanished meanwhile: stay on the last page that has some
            await self.load(page - 1)
        await interaction.response.edit_message(embed=self.embed(), view=self, allowed_mentions=NO_MENTIONS)

    async def on_timeout(self) -> None:
        """Take the buttons away once they stop working."""
        if self.opened_by is not None:
            with contextlib.suppress(discord.HTTPException):
                await self.opened_by.edit_original_response(view=None)

    async def on_error(self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item) -> None:
        """Log, and tell only the clicker (the page itself is never overwritten with the error)."""
        await answer_unexpected(interaction, error, "history pager")


def queue_line(job: JobRecord, position: int | None, eta_seconds: float | None) -> str:
    """`#12` · ⏳ #3 in line · about 40 s · prompt"""
    if job.status is JobStatus.RUNNING:
        where = f"{STATUS_ICONS[job.status]} running now"
    elif position is None:
        where = f"{STATUS_ICONS[job.status]} queued"
    else:
        place = "next in line" if position == 1 else f"#{position} in line"
        where = f"{STATUS_ICONS[job.status]} {place}{render.describe_eta(eta_seconds)}"
    return f"`#{job.id}` · {where} · {render.safe_text(job.prompt, PROMPT_SHOWN)}"


class HistoryCog(commands.Cog):
    """What you made, what is waiting, and cancelling what you no longer want."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @property
    def store(self) -> Store:
        return self.bot.services.store

    @app_commands.command(name="history")
    @app_commands.describe(
        user="Whose jobs (moderators only, for someone else)",
        search="Only jobs whose prompt has all these words",
    )
    async def history(
        self,
        interaction: discord.Interaction,
        user: discord.User | None = None,
        search: app_commands.Range[str, 1, 200] | None = None,
    ) -> None:
        """Your recent jobs here, newest first"""
        target = user or interaction.user
        if target.id != interaction.user.id and not is_moderator(interaction):
            await answer_error(interaction, MODERATORS_ONLY)
            return
        own = target.id == interaction.user.id
        # Embed titles hold 256 characters; escaping may double what we show.
        title = "Your images" if own else f"Images by {render.safe_text(target.display_name, 40)}"
        if search:
            title += f" matching '{render.safe_text(search, 40)}'"
        query = HistoryQuery(target.id, interaction.guild_id, search)
        pager = HistoryPager(self.store, query, title, interaction.user.id)
        await pager.load(0)
        if not pager.jobs:
            if search:
                text = f"No jobs match '{render.safe_text(search, 80)}'."
            elif own:
                text = "You have no images here yet."
            else:
                text = f"{target.mention} has no images here yet."
            await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
            return
        await interaction.response.send_message(
            embed=pager.embed(), view=pager, ephemeral=True, allowed_mentions=NO_MENTIONS
        )
        pager.opened_by = interaction

    @app_commands.command(name="queue")
    async def queue(self, interaction: discord.Interaction) -> None:
        """Your queued and running jobs, with their place in line"""
        queue = self.bot.services.queue
        jobs = await self.store.active_jobs(interaction.user.id)
        waiting = f"{len(queue)} job(s) waiting in the queue overall."
        if not jobs:
            text = f"You have nothing queued or running. {waiting}"
            await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
            return
        placed = [(job, queue.position(job.id)) for job in jobs]
        # Running first, then in the order the queue will take them; unplaced ones (a moment from starting) last.
        placed.sort(key=lambda p: (p[0].status is not JobStatus.RUNNING, p[1] is None, p[1] or 0, p[0].id))
        lines = [queue_line(job, position, queue.eta(job.id)) for job, position in placed]
        text = "\n".join(["**Your jobs**", *lines, waiting])
        await interaction.response.send_message(text[:2000], ephemeral=True, allowed_mentions=NO_MENTIONS)

    @app_commands.command(name="cancel")
    @app_commands.describe(job="Job number (default: your most recent queued or running job)")
    async def cancel(self, interaction: discord.Interaction, job: app_commands.Range[int, 1] | None = None) -> None:
        """Cancel a queued or running job"""
        if job is None:
            active = await self.store.active_jobs(interaction.user.id, limit=1)
            if not active:
                await answer_error(interaction, "You have no queued or running jobs to cancel.")
                return
            record = active[0]
        else:
            found = await self.store.get_job(job)
            if found is None:
                await answer_error(interaction, f"There is no job {job}.")
                return
            record = found
        if not may_manage(interaction, record):
            await answer_error(
                interaction,
                f"Only the person who asked for job {record.id}, or a moderator of the server it was made in, "
                "can cancel it.",
            )
            return
        if record.status.is_finished or not await self.bot.services.queue.cancel(record.id):
            latest = await self.store.get_job(record.id) or record
            await answer_error(interaction, f"Job {record.id} already finished ({latest.status.value}).")
            return
        await interaction.response.send_message(
            f"Cancelled job {record.id}.", ephemeral=True, allowed_mentions=NO_MENTIONS
        )

    @cancel.autocomplete("job")
    async def _active_jobs(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[int]]:
        typed = str(current).strip().lstrip("#").casefold()
        choices = []
        for record in await self.store.active_jobs(interaction.user.id):
            if typed and not (str(record.id).startswith(typed) or typed in record.prompt.casefold()):
                continue
            prompt = " ".join(record.prompt.split())
            name = f"#{record.id} · {record.status.value} · {prompt}"
            choices.append(app_commands.Choice(name=name[:100], value=record.id))
        return choices[:25]


async def setup(bot: ImagineBot) -> None:
    """Extension entry point."""
    await bot.add_cog(HistoryCog(bot))
