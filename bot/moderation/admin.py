"""/imagine-admin: show, set and reset a server's limits, permissions and content policy; read the audit log.

Visible by default to members with Manage Server only (`default_permissions`), and checked again on
every call, since a server can hand commands to anyone in its integration settings. Every change is
written with who made it and old → new (storage.guilds), which `/imagine-admin audit` lists.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.answers import answer_error
from bot.moderation import report
from bot.moderation.settings import (
    DM_SCOPE,
    MAX_SHARE_WEIGHT,
    NSFW_POLICIES,
    SCALAR_KEYS,
    SETTINGS,
    InvalidSetting,
    banned_entries,
    defaults,
    parse_value,
    show_value,
    with_added,
    with_removed,
)
from bot.render import NO_MENTIONS
from generation.errors import InvalidRequest
from jobs.worker import STORAGE_FULL, Worker

if TYPE_CHECKING:
    from bot.app import ImagineBot

log = logging.getLogger(__name__)

AUDIT_SHOWN = 20
EMBED_LIMIT = 4096
SETTING_CHOICES = [app_commands.Choice(name=f"{key} — {SETTINGS[key].label}"[:100], value=key) for key in SETTINGS]
SCALAR_CHOICES = [c for c in SETTING_CHOICES if c.value in SCALAR_KEYS]
GuildChannel = discord.TextChannel | discord.ForumChannel | discord.VoiceChannel | discord.CategoryChannel


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class AdminCog(commands.GroupCog, group_name="imagine-admin", group_description="Server limits and content policy"):
    """Server moderation for imagine-bot."""

    channels = app_commands.Group(name="channels", description="Channels where images can be made (none: all)")
    roles = app_commands.Group(name="roles", description="Roles allowed to make images (none: everyone)")
    share = app_commands.Group(name="share", description="Roles with a larger fair share of the GPU")
    block = app_commands.Group(name="block", description="Members who may not make images here")
    words = app_commands.Group(name="words", description="Banned words and phrases in prompts")
    train_roles = app_commands.Group(
        name="train-roles", description="Roles allowed to train LoRAs (none: whoever may make images)"
    )

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction) -> bool:  # type: ignore[override]
        """Manage Server, checked on every call (errors reach the tree's handler, which answers them)."""
        if interaction.guild_id is None:
            raise app_commands.NoPrivateMessage()
        if not interaction.permissions.manage_guild:
            raise app_commands.MissingPermissions(["manage_guild"])
        return True

    # --- reading --------------------------------------------------------------------------------

    @app_commands.command(name="show")
    async def show(self, interaction: discord.Interaction) -> None:
        """Every setting on this server, its value, and whether it is the default"""
        services = self.bot.services
        stored = await services.store.get_guild_settings(interaction.guild_id)
        dm_stored = await services.store.get_guild_settings(DM_SCOPE)
        lines = [*worker_lines(services.workers), *report.settings_lines(stored, dm_stored, services.config)]
        lines += ["", *report.safety_lines(services.config, services.safety_checks)]
        embed = discord.Embed(title="imagine-bot on this server", description=report.fit(lines, EMBED_LIMIT))
        embed.set_footer(text="Change with /imagine-admin set, reset, or the add/remove commands.")
        await interaction.response.send_message(embed=embed, ephemeral=True, allowed_mentions=NO_MENTIONS)

    @app_commands.command(name="audit")
    async def audit(self, interaction: discord.Interaction) -> None:
        """The latest setting changes: who, when, old → new"""
        store = self.bot.services.store
        entries = await store.audit_log(interaction.guild_id, limit=AUDIT_SHOWN)
        entries += await store.audit_log(DM_SCOPE, limit=AUDIT_SHOWN)  # bot-wide changes show everywhere
        entries = sorted(entries, key=lambda e: e.at, reverse=True)[:AUDIT_SHOWN]
        if not entries:
            await self._say(interaction, "No setting has been changed on this server yet.")
            return
        embed = discord.Embed(
            title="Setting changes, newest first", description=report.fit(report.audit_lines(entries), EMBED_LIMIT)
        )
        await interaction.response.send_message(embed=embed, ephemeral=True, allowed_mentions=NO_MENTIONS)

    # --- single values -----------------------------------------------------------------------------

    @app_commands.command(name="set")
    @app_commands.describe(setting="What to change", value="The new value (see /imagine-admin show)")
    @app_commands.choices(setting=SCALAR_CHOICES)
    async def set_(
        self, interaction: discord.Interaction, setting: str, value: app_commands.Range[str, 1, 500]
    ) -> None:
        """Change a limit or policy on this server"""
        try:
            await self._require_owner_for(interaction, setting)
            parsed = parse_value(setting, value, self.bot.services.config)
        except InvalidRequest as exc:
            await answer_error(interaction, exc.user_message)
            return
        await self._store(interaction, setting, parsed)

    @set_.autocomplete("value")
    async def _values(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        key = getattr(interaction.namespace, "setting", None)
        options: list[str] = {
            "nsfw": list(NSFW_POLICIES),
            "default_model": self.bot.services.catalog.names,  # not the models that failed to load
        }.get(key, [])
        if key in SETTINGS and SETTINGS[key].kind == "switch":
            options = ["on", "off"]
        return [app_commands.Choice(name=o, value=o) for o in options if current.casefold() in o.casefold()][:25]

    @app_commands.command(name="reset")
    @app_commands.describe(setting="What to put back to the bot's default")
    @app_commands.choices(setting=SETTING_CHOICES)
    async def reset(self, interaction: discord.Interaction, setting: str) -> None:
        """Put a setting back to the default"""
        try:
            await self._require_owner_for(interaction, setting)
        except InvalidRequest as exc:
            await answer_error(interaction, exc.user_message)
            return
        scope = self._scope(interaction, setting)
        changed = await self.bot.services.store.reset_guild_setting(scope, setting, by_user=interaction.user.id)
        default = show_value(setting, defaults(self.bot.services.config)[setting])
        done = "is back to" if changed else "was already"
        await self._say(interaction, f"`{setting}` {done} the default: **{default}**.")

    # --- lists ----------------------------------------------------------------------------------------

    @channels.command(name="add")
    @app_commands.describe(channel="A channel (or a whole category) where images can be made")
    async def channels_add(self, interaction: discord.Interaction, channel: GuildChannel) -> None:
        """Allow making images in a channel (once any is listed, only listed ones)"""
        await self._add(interaction, "channels", [channel.id])

    @channels.command(name="remove")
    @app_commands.describe(channel="A channel to take off the list")
    async def channels_remove(self, interaction: discord.Interaction, channel: GuildChannel) -> None:
        """Take a channel off the allowed list (an empty list allows all)"""
        await self._remove(interaction, "channels", [channel.id])

    @roles.command(name="add")
    @app_commands.describe(role="A role whose members may make images")
    async def roles_add(self, interaction: discord.Interaction, role: discord.Role) -> None:
        """Allow a role to make images (once any is listed, only listed roles may)"""
        await self._add(interaction, "roles", [role.id])

    @roles.command(name="remove")
    @app_commands.describe(role="A role to take off the list")
    async def roles_remove(self, interaction: discord.Interaction, role: discord.Role) -> None:
        """Take a role off the allowed list (an empty list allows everyone)"""
        await self._remove(interaction, "roles", [role.id])

    @share.command(name="add")
    @app_commands.describe(role="Members with this role…", weight="…get this many times the usual share (e.g. 2)")
    async def share_add(
        self,
        interaction: discord.Interaction,
        role: discord.Role,
        weight: app_commands.Range[float, 0.1, MAX_SHARE_WEIGHT] = 2.0,
    ) -> None:
        """Give a role a larger (or smaller) fair share of the GPU queue"""
        await self._add(interaction, "share_roles", [role.id], weight=weight)

    @share.command(name="remove")
    @app_commands.describe(role="A role back to the usual share")
    async def share_remove(self, interaction: discord.Interaction, role: discord.Role) -> None:
        """Put a role back to the usual share"""
        await self._remove(interaction, "share_roles", [role.id])

    @block.command(name="add")
    @app_commands.describe(member="Who may no longer make images here")
    async def block_add(self, interaction: discord.Interaction, member: discord.User) -> None:
        """Stop a member from making images on this server"""
        await self._add(interaction, "blocked_users", [member.id])

    @block.command(name="remove")
    @app_commands.describe(member="Who may make images again")
    async def block_remove(self, interaction: discord.Interaction, member: discord.User) -> None:
        """Let a blocked member make images again"""
        await self._remove(interaction, "blocked_users", [member.id])

    @words.command(name="add")
    @app_commands.describe(words="Words or phrases, separated by commas; `word*` also bans longer forms")
    async def words_add(self, interaction: discord.Interaction, words: app_commands.Range[str, 1, 1000]) -> None:
        """Ban words in prompts (case, accents, look-alikes and spacing tricks are seen through)"""
        try:
            entries = banned_entries(words)
        except InvalidSetting as exc:
            await answer_error(interaction, exc.user_message)
            return
        await self._add(interaction, "banned_words", entries)

    @words.command(name="remove")
    @app_commands.describe(words="Words or phrases to allow again, separated by commas")
    async def words_remove(self, interaction: discord.Interaction, words: app_commands.Range[str, 1, 1000]) -> None:
        """Allow banned words again"""
        await self._remove(interaction, "banned_words", [" ".join(w.split()) for w in words.split(",") if w.strip()])

    @train_roles.command(name="add")
    @app_commands.describe(role="A role whose members may train LoRAs")
    async def train_roles_add(self, interaction: discord.Interaction, role: discord.Role) -> None:
        """Allow a role to train LoRAs (once any is listed, only listed roles may)"""
        await self._add(interaction, "train_roles", [role.id])

    @train_roles.command(name="remove")
    @app_commands.describe(role="A role to take off the list")
    async def train_roles_remove(self, interaction: discord.Interaction, role: discord.Role) -> None:
        """Take a role off the training list (an empty list allows whoever may make images)"""
        await self._remove(interaction, "train_roles", [role.id])

    # --- shared ---------------------------------------------------------------------------------------

    def _scope(self, interaction: discord.Interaction, key: str) -> int:
        return DM_SCOPE if SETTINGS[key].bot_wide else interaction.guild_id  # type: ignore[return-value]

    async def _require_owner_for(self, interaction: discord.Interaction, key: str) -> None:
        if SETTINGS[key].bot_wide and not await self.bot.is_owner(interaction.user):
            raise InvalidSetting(
                f"`{key}` applies to the whole bot, not one server: only the bot's owner can change it."
            )

    async def _current(self, interaction: discord.Interaction, key: str) -> Any:
        stored = await self.bot.services.store.get_guild_settings(self._scope(interaction, key))
        return stored.get(key, defaults(self.bot.services.config)[key])

    async def _store(self, interaction: discord.Interaction, key: str, value: Any) -> None:
        before = await self._current(interaction, key)
        await self.bot.services.store.set_guild_setting(
            self._scope(interaction, key), key, value, by_user=interaction.user.id
        )
        old = show_value(key, before)
        await self._say(interaction, f"`{key}` is now **{show_value(key, value)}** (was {old}).")

    async def _add(self, interaction: discord.Interaction, key: str, items: list[Any], **extra: Any) -> None:
        try:
            updated = with_added(key, await self._current(interaction, key), items, extra)
        except InvalidSetting as exc:
            await answer_error(interaction, exc.user_message)
            return
        await self._store(interaction, key, updated)

    async def _remove(self, interaction: discord.Interaction, key: str, items: list[Any]) -> None:
        updated, missing = with_removed(key, await self._current(interaction, key), items)
        if len(missing) == len(items):
            await answer_error(interaction, f"Nothing to remove: `{key}` does not have that.")
            return
        if updated:
            await self._store(interaction, key, updated)
            return
        await self.bot.services.store.reset_guild_setting(
            self._scope(interaction, key), key, by_user=interaction.user.id
        )
        await self._say(interaction, f"`{key}` is now empty: **{show_value(key, updated)}**.")

    @staticmethod
    async def _say(interaction: discord.Interaction, text: str) -> None:
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)


def worker_lines(workers: Sequence[Worker]) -> list[str]:
    """What the GPU is doing (one line), and what a full disk means for the jobs; nothing without workers."""
    if not workers:
        return []
    states = Counter(worker.state for worker in workers)
    shown = ", ".join(state if len(workers) == 1 else f"{count} {state}" for state, count in states.items())
    lines = [f"**GPU{' workers' if len(workers) > 1 else ''}**: {shown}"]
    if STORAGE_FULL in states:
        lines.append(
            "💾 The bot's storage is full: finished images cannot be saved, so jobs wait in the queue (none are "
            "lost) and continue once the bot's operator frees disk space."
        )
    return [*lines, ""]


async def setup(bot: ImagineBot) -> None:
    """Extension entry point."""
    await bot.add_cog(AdminCog(bot))
