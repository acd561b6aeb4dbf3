"""The real, unmodified discord.py client against the loopback fake Discord."""

from __future__ import annotations

import asyncio
import io
import re
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
import pytest_asyncio
from discord import app_commands
from PIL import Image

from tests.fake_discord import FakeDiscord, Permission, running_client
from tests.fake_discord.gateway import shard_of
from tests.fake_discord.messages import EPHEMERAL, LOADING


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


PNG = _png(2, 3)


class EchoButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"echo:(?P<n>\d+)"):
    """A restart-proof button whose custom_id carries a number."""

    def __init__(self, n: int) -> None:
        super().__init__(discord.ui.Button(label=f"Echo {n}", custom_id=f"echo:{n}"))
        self.n = n

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> EchoButton:
        return cls(int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"echo {self.n}", ephemeral=True)


class RenameButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"rename:(?P<n>\d+)"):
    """Opens a modal."""

    def __init__(self, n: int) -> None:
        super().__init__(discord.ui.Button(label="Rename", custom_id=f"rename:{n}"))

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> RenameButton:
        return cls(int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(RenameModal())


class RenameModal(discord.ui.Modal, title="Rename"):
    name: discord.ui.TextInput[Any] = discord.ui.TextInput(label="New name", custom_id="rename:name")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.edit_message(content=f"renamed to {self.name.value}")


class PingBot(discord.Client):
    """A small bot using what imagine-bot uses: slash commands, files, dynamic buttons, replies."""

    def __init__(self) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_messages = True
        intents.message_content = True
        super().__init__(intents=intents, chunk_guilds_at_startup=False, guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.seen: asyncio.Queue[discord.Message] = asyncio.Queue()
        self.can_manage: list[bool] = []
        self.tree.add_command(ping)
        self.tree.add_command(draw)
        self.tree.add_command(app_commands.ContextMenu(name="Remix", callback=remix))

    async def setup_hook(self) -> None:
        self.add_dynamic_items(EchoButton, RenameButton)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py waits 5 s before every re-IDENTIFY; not needed against the fake."""

    async def on_message(self, message: discord.Message) -> None:
        if self.user is not None and message.author.id != self.user.id:
            await self.seen.put(message)


@app_commands.command()
@app_commands.describe(text="What to echo back", image="A picture to send back")
async def ping(interaction: discord.Interaction, text: str, image: discord.Attachment | None = None) -> None:
    """Echo text and an image back."""
    assert isinstance(interaction.client, PingBot)
    interaction.client.can_manage.append(interaction.permissions.manage_guild)
    await interaction.response.defer()
    data = await image.read() if image else b"none"
    view = discord.ui.View(timeout=None)
    view.add_item(EchoButton(7))
    view.add_item(RenameButton(7))
    await interaction.followup.send(f"pong {text}", file=discord.File(io.BytesIO(data), "echo.png"), view=view)


class SizeView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.select(custom_id="draw:size", options=[discord.SelectOption(label=s, value=s) for s in ("512", "768")])
    async def size(self, interaction: discord.Interaction, select: discord.ui.Select[Any]) -> None:
        await interaction.response.edit_message(content=f"size {select.values[0]}", view=None)


@app_commands.command()
@app_commands.describe(model="Model name", count="How many")
async def draw(interaction: discord.Interaction, model: str, count: app_commands.Range[int, 1, 4] = 1) -> None:
    """Respond, edit @original, read it back, follow up ephemerally."""
    await interaction.response.send_message(f"drawing {count} with {model}", view=SizeView())
    await interaction.edit_original_response(content=f"drew {count} with {model}")
    original = await interaction.original_response()
    await interaction.followup.send(f"only you see {original.id}", ephemeral=True)


@draw.autocomplete("model")
async def draw_model(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=m, value=m) for m in ("sd15", "sdxl", "flux") if m.startswith(current)]


async def remix(interaction: discord.Interaction, message: discord.Message) -> None:
    """Message context menu."""
    await interaction.response.send_message(f"remixing {message.id}: {message.content}")


@pytest_asyncio.fixture
async def fake(fake_discord: FakeDiscord) -> FakeDiscord:
    return fake_discord


@pytest_asyncio.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[PingBot]:
    client = PingBot()
    async with running_client(client, fake):
        client.tree.copy_global_to(guild=discord.Object(fake.guild.id))
        await client.tree.sync(guild=discord.Object(fake.guild.id))
        yield client


async def test_login_identify_and_ready(fake: FakeDiscord, bot: PingBot) -> None:
    assert bot.user is not None and bot.user.id == fake.bot_user.id
    assert bot.application_id == fake.application_id
    guild = bot.get_guild(fake.guild.id)
    assert guild is not None and guild.get_channel(fake.channel.id) is not None
    assert guild.member_count == 5 and guild.me is not None and guild.owner_id == fake.owner.id
    assert guild.me.guild_permissions.attach_files and not guild.me.guild_permissions.manage_guild
    identify = await fake.wait_for_gateway("identify")
    assert identify.data["intents"] == bot.intents.value and "token" not in identify.data
    connect = await fake.wait_for_gateway("connect")
    assert connect.data["query"] == {"v": "10", "encoding": "json", "compress": "zlib-stream"}
    assert [r.path for r in fake.requests[:2]] == ["/users/@me", "/oauth2/applications/@me"]
    assert all("Authorization" not in r.headers for r in fake.requests)


async def test_tree_sync_registers_commands(fake: FakeDiscord, bot: PingBot) -> None:
    commands = {c["name"]: c for c in fake.registered_commands(fake.guild.id)}
    assert set(commands) == {"ping", "draw", "Remix"}
    assert [o["name"] for o in commands["ping"]["options"]] == ["text", "image"]
    ids = {c["name"]: c["id"] for c in fake.registered_commands(fake.guild.id)}
    again = await bot.tree.sync(guild=discord.Object(fake.guild.id))
    assert {c.name: str(c.id) for c in again} == ids  # re-sync keeps ids
    await bot.tree.sync()
    assert {c["name"] for c in fake.registered_commands()} == {"ping", "draw", "Remix"}
    dm = await fake.send_slash_command("ping", {"text": "in a DM"}, channel_id=fake.dm_channel(fake.member).id)
    assert (await dm.wait_for_message())["content"] == "pong in a DM"
    assert "member" not in dm.payload and dm.payload["context"] == 1


async def test_slash_command_defer_and_followup_with_file(fake: FakeDiscord, bot: PingBot) -> None:
    handle = await fake.send_slash_command(
        "ping", {"text": "hi"}, attachments={"image": ("cat.png", PNG, "image/png")}, user=fake.moderator
    )
    callback = await handle.wait_for_callback()
    assert callback["type"] == 5
    message = await handle.wait_for_message()
    assert message["id"] == str(handle.original_message_id)  # the first follow-up replaced "thinking..."
    assert message["content"] == "pong hi" and not message["flags"] & LOADING
    [attachment] = message["attachments"]
    assert attachment["filename"] == "echo.png" and (attachment["width"], attachment["height"]) == (2, 3)
    assert attachment["content_type"] == "image/png"
    assert fake.attachment_bytes(attachment) == PNG
    await fake.send_slash_command("ping", {"text": "plain member"}, user=fake.member)
    await fake.wait_until(lambda: len(bot.can_manage) == 2 or None)
    assert bot.can_manage == [True, False]  # Manage Server: moderator yes, plain member no
    followup = await fake.wait_for_request(lambda r: r.path.startswith("/webhooks/"))
    assert followup.query["wait"] == "1" and followup.files[0].data == PNG
    assert followup.json["attachments"][0]["filename"] == "echo.png"
    assert [c["custom_id"] for c in message["components"][0]["components"]] == ["echo:7", "rename:7"]
    async with aiohttp.ClientSession() as session, session.get(attachment["url"]) as response:
        assert response.status == 200 and await response.read() == PNG


async def test_button_click_reaches_dynamic_item(fake: FakeDiscord, bot: PingBot) -> None:
    handle = await fake.send_slash_command("ping", {"text": "x"})
    message = await handle.wait_for_message()
    click = await fake.send_button_click(int(message["id"]), "echo:7", user=fake.other_member)
    reply = await click.wait_for_message()
    assert reply["content"] == "echo 7" and reply["flags"] & EPHEMERAL
    assert reply not in fake.messages()  # ephemeral: not in channel history
    with pytest.raises(LookupError):
        await fake.send_button_click(int(message["id"]), "nope")


async def test_modal_round_trip(fake: FakeDiscord, bot: PingBot) -> None:
    handle = await fake.send_slash_command("ping", {"text": "x"})
    message = await handle.wait_for_message()
    click = await fake.send_button_click(int(message["id"]), "rename:7")
    modal = await click.wait_for_modal()
    assert modal["title"] == "Rename"
    submit = await fake.send_modal_submit(modal["custom_id"], {"rename:name": "Rex"})
    assert (await submit.wait_for_callback())["type"] == 7
    assert await fake.wait_until(lambda: fake.message(int(message["id"]))["content"] == "renamed to Rex" or None)


async def test_message_command_and_reply(fake: FakeDiscord, bot: PingBot) -> None:
    posted = await fake.post_user_message("a red fox", attachments=[("fox.png", PNG)])
    seen = await asyncio.wait_for(bot.seen.get(), 5)
    assert seen.content == "a red fox" and seen.attachments[0].width == 2
    reply = await fake.post_user_message("make it blue", reply_to=int(posted["id"]), user=fake.other_member)
    seen = await asyncio.wait_for(bot.seen.get(), 5)
    assert seen.reference is not None and seen.reference.message_id == int(posted["id"])
    assert isinstance(seen.reference.resolved, discord.Message) and seen.reference.resolved.content == "a red fox"
    assert seen.id == int(reply["id"]) and seen.author.id == fake.other_member.id
    handle = await fake.send_message_command("Remix", int(posted["id"]))
    assert (await handle.wait_for_message())["content"] == f"remixing {posted['id']}: a red fox"


async def test_reconnect_and_drop_resume(fake: FakeDiscord, bot: PingBot) -> None:
    mark = len(fake.gateway.log)
    await fake.send_reconnect()
    resumed = await fake.wait_for_gateway("resumed", since=mark)
    resume_connect = next(e for e in fake.gateway.log[mark:] if e.kind == "connect")
    assert resume_connect.data["path"] == "/gateway/resume"
    handle = await fake.send_slash_command("ping", {"text": "after reconnect"})
    assert (await handle.wait_for_message())["content"] == "pong after reconnect"

    mark = len(fake.gateway.log)
    await fake.drop_gateway()
    # Sent while the client is away: must be replayed on RESUME.
    await fake.post_user_message("while you were out")
    await fake.wait_for_gateway("resumed", since=mark)
    seen = await asyncio.wait_for(bot.seen.get(), 5)
    assert seen.content == "while you were out"
    handle = await fake.send_slash_command("ping", {"text": "after drop"})
    assert (await handle.wait_for_message())["content"] == "pong after drop"
    assert resumed.data["seq"] > 0


async def test_invalid_session_reidentifies(fake: FakeDiscord, bot: PingBot) -> None:
    mark = len(fake.gateway.log)
    await fake.invalidate_session(resumable=False)
    ready = await fake.wait_for_gateway("ready_sent", since=mark)
    assert fake.gateway.current is not None and ready.data["session_id"] == fake.gateway.current.id
    handle = await fake.send_slash_command("ping", {"text": "fresh"})
    assert (await handle.wait_for_message())["content"] == "pong fresh"


async def test_rate_limited_followup_is_retried(fake: FakeDiscord, bot: PingBot) -> None:
    fake.inject("POST", r"^/webhooks/\d+/[^/]+$", 429, times=2, retry_after=0.05)
    handle = await fake.send_slash_command("ping", {"text": "slow"})
    assert (await handle.wait_for_message())["content"] == "pong slow"
    attempts = [r for r in fake.requests if r.path.startswith("/webhooks/")]
    assert [r.status for r in attempts] == [429, 429, 200]
    assert attempts[0].response["retry_after"] == 0.05


async def test_rest_errors_surface_in_discord_py(fake: FakeDiscord, bot: PingBot) -> None:
    channel = bot.get_channel(fake.channel.id)
    assert isinstance(channel, discord.TextChannel)
    fake.inject("GET", r"/messages/\d+$", 404, times=1)
    with pytest.raises(discord.NotFound) as info:
        await channel.fetch_message(1)
    assert info.value.code == 10008
    sent = await channel.send("hello", file=discord.File(io.BytesIO(PNG), "a.png"))
    assert sent.attachments[0].content_type == "image/png" and fake.messages()[-1]["content"] == "hello"
    fetched = await channel.fetch_message(sent.id)
    await fetched.edit(content="edited")
    assert fake.message(sent.id)["content"] == "edited"  # type: ignore[index]
    with pytest.raises(discord.HTTPException) as too_long:
        await channel.send("x", view=discord.ui.View().add_item(discord.ui.Button(label="b", custom_id="c" * 101)))
    assert too_long.value.code == 50035
    await sent.delete()
    assert fake.message(sent.id) is None


async def test_interaction_ack_deadline(fake: FakeDiscord, bot: PingBot) -> None:
    fake.interaction_ack_timeout = 0.0
    handle = await fake.send_slash_command("ping", {"text": "late"})
    request = await fake.wait_for_request(lambda r: r.path.endswith("/callback"))
    assert request.status == 404 and request.response["code"] == 10062
    assert not handle.acknowledged


async def test_zlib_stream_framing(fake: FakeDiscord) -> None:
    url = fake.gateway_url + "?v=10&encoding=json&compress=zlib-stream"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        frame = await ws.receive_bytes()
        assert frame.endswith(b"\x00\x00\xff\xff")
        assert b'"op":10' in zlib.decompressobj().decompress(frame)
        await ws.send_json({"op": 2, "d": {"token": "wrong", "intents": 0, "properties": {}}})
        closed = await ws.receive()
        assert closed.type is aiohttp.WSMsgType.CLOSE and closed.data == 4004


async def test_autocomplete_select_and_original_edits(fake: FakeDiscord, bot: PingBot) -> None:
    typing = await fake.send_autocomplete("draw", {"model": "sd"}, focused="model")
    assert [c["value"] for c in await typing.wait_for_choices()] == ["sd15", "sdxl"]
    with pytest.raises(ValueError, match="outside"):
        await fake.send_slash_command("draw", {"model": "sd15", "count": 9})  # the client enforces ranges
    handle = await fake.send_slash_command("draw", {"model": "sd15", "count": 2})
    followup = await handle.wait_for_followup()
    assert followup["flags"] & EPHEMERAL and followup["content"] == f"only you see {handle.original_message_id}"
    original = handle.original
    assert original is not None and original["content"] == "drew 2 with sd15" and original["edited_timestamp"]
    assert original["interaction_metadata"]["user"]["id"] == str(fake.member.id)
    choice = await fake.send_component(int(original["id"]), "draw:size", values=["768"])
    assert (await choice.wait_for_callback())["type"] == 7
    edited = fake.message(int(original["id"]))
    assert edited is not None and edited["content"] == "size 768" and edited["components"] == []


async def test_message_content_needs_the_intent(fake: FakeDiscord) -> None:
    intents = discord.Intents.none()
    intents.guilds = intents.guild_messages = True
    client = discord.Client(intents=intents, chunk_guilds_at_startup=False, guild_ready_timeout=0.05)
    seen: asyncio.Queue[discord.Message] = asyncio.Queue()

    @client.event
    async def on_message(message: discord.Message) -> None:
        await seen.put(message)

    async with running_client(client, fake):
        await fake.post_user_message("secret prompt")
        await fake.post_user_message(f"{fake.bot_user.mention} hello")
        first, second = await asyncio.wait_for(seen.get(), 5), await asyncio.wait_for(seen.get(), 5)
    assert first.content == "" and second.content.endswith("hello")


async def test_permissions_and_server_errors(fake: FakeDiscord, bot: PingBot) -> None:
    bot_role = fake.guild.role("imagine-bot")
    deny = {"id": str(bot_role.id), "type": 0, "allow": "0", "deny": str(Permission.ATTACH_FILES)}
    fake.channel.permission_overwrites.append(deny)
    channel = bot.get_channel(fake.channel.id)
    assert isinstance(channel, discord.TextChannel)
    with pytest.raises(discord.Forbidden) as forbidden:
        await channel.send(file=discord.File(io.BytesIO(PNG), "a.png"))
    assert forbidden.value.code == 50013
    fake.inject("POST", r"^/channels/\d+/messages$", 500, times=1)
    await channel.send("after a 500")  # discord.py retries 5xx after a second
    posts = [r.status for r in fake.requests if r.method == "POST" and r.path == f"/channels/{channel.id}/messages"]
    assert posts == [403, 500, 200]


async def test_expired_interaction_token(fake: FakeDiscord, bot: PingBot) -> None:
    fake.interaction_token_ttl = 0.0
    handle = await fake.send_slash_command("ping", {"text": "too late"})
    assert (await handle.wait_for_callback())["type"] == 5
    request = await fake.wait_for_request(lambda r: r.path.startswith("/webhooks/"))
    assert request.status == 401 and request.response["code"] == 50027


async def test_each_guild_comes_on_its_own_shard(fake: FakeDiscord) -> None:
    fake.gateway.guilds_per_shard = 1
    other = fake.add_guild("Second Server", shard=(1 - shard_of(fake.guild.id, 2), 2))
    intents = discord.Intents.none()
    intents.guilds = intents.guild_messages = intents.message_content = True
    client = discord.AutoShardedClient(
        intents=intents, shard_count=2, chunk_guilds_at_startup=False, guild_ready_timeout=0.05
    )

    async def no_identify_wait(shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py waits 5 s before each shard but the first; not needed against the fake."""

    client.before_identify_hook = no_identify_wait  # type: ignore[method-assign]
    seen: asyncio.Queue[discord.Message] = asyncio.Queue()

    @client.event
    async def on_message(message: discord.Message) -> None:
        await seen.put(message)

    async with running_client(client, fake):
        count, _url, limits = await client.http.get_bot_gateway()
        assert count == 2 and set(limits) == {"total", "remaining", "reset_after", "max_concurrency"}
        assert limits["remaining"] == limits["total"] - 2  # two session starts so far
        for guild in (fake.guild, other):
            assert client.get_guild(guild.id).shard_id == shard_of(guild.id, 2)  # type: ignore[union-attr]
            await fake.post_user_message(f"hello {guild.name}", channel_id=guild.channel("general").id)
        got = {(await asyncio.wait_for(seen.get(), 5)).guild.id for _ in range(2)}  # type: ignore[union-attr]
        assert got == {fake.guild.id, other.id}
    for guild in (fake.guild, other):
        frames = fake.gateway.shards[shard_of(guild.id, 2)].events
        on_shard = {
            f["d"].get("guild_id") or f["d"].get("id") for f in frames if f["t"] in ("GUILD_CREATE", "MESSAGE_CREATE")
        }
        assert on_shard == {str(guild.id)}


@pytest.mark.parametrize("shard", [[2, 2], [0, 0], [-1, 2], [0]])
async def test_identify_outside_the_shard_range_is_refused(fake: FakeDiscord, shard: list[int]) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(fake.gateway_url + "?v=10") as ws:
        assert (await ws.receive_json())["op"] == 10
        await ws.send_json({"op": 2, "d": {"token": fake.token, "intents": 0, "properties": {}, "shard": shard}})
        closed = await ws.receive()
        assert closed.type is aiohttp.WSMsgType.CLOSE and closed.data == 4010


async def test_too_many_guilds_for_one_connection_is_refused(fake: FakeDiscord) -> None:
    fake.gateway.max_guilds_per_shard = 1  # Discord: 2,500
    fake.add_guild("Second Server")
    client = discord.Client(intents=discord.Intents.none(), guild_ready_timeout=0.05)
    with pytest.raises(discord.ConnectionClosed) as closed:
        async with running_client(client, fake):
            pass
    assert closed.value.code == 4011  # Sharding required


async def test_outage_lost_answers_and_enforced_nonces(fake: FakeDiscord, bot: PingBot) -> None:
    channel = bot.get_partial_messageable(fake.channel.id)
    fake.start_outage()
    with pytest.raises(discord.DiscordServerError) as down:
        await channel.send("during the outage")  # discord.py raises a 503 at once (it retries 500/502/504)
    assert down.value.status == 503 and down.value.text == "Service Unavailable"
    await fake.post_user_message("the gateway stays up")
    assert (await asyncio.wait_for(bot.seen.get(), 5)).content == "the gateway stays up"
    fake.start_outage(403)
    with pytest.raises(discord.Forbidden):
        await channel.send("still refused")
    fake.end_outage()
    first = await channel.send("one copy", nonce="result-1")
    assert (await channel.send("one copy", nonce="result-1")).id == first.id  # enforced: the first one back
    fake.inject("POST", r"^/channels/\d+/messages$", None, lose_response=True)
    with pytest.raises(aiohttp.ClientError):
        await channel.send("made, answer lost", nonce="result-2")
    again = await channel.send("made, answer lost", nonce="result-2")
    assert [m["id"] for m in fake.messages() if m["content"] == "made, answer lost"] == [str(again.id)]
    with pytest.raises(discord.HTTPException) as long_nonce:
        await channel.send("x", nonce="n" * 26)
    assert long_nonce.value.code == 50035


async def test_a_deleted_channel_and_a_server_that_removed_the_bot(fake: FakeDiscord, bot: PingBot) -> None:
    art = fake.guild.channel("art")
    await fake.delete_channel(art)
    await fake.wait_until(lambda: bot.get_channel(art.id) is None or None)
    with pytest.raises(discord.NotFound) as gone:
        await bot.get_partial_messageable(art.id).send("hello?")
    assert gone.value.code == 10003  # Unknown Channel
    await fake.remove_bot(fake.guild)
    await fake.wait_until(lambda: bot.get_guild(fake.guild.id) is None or None)
    with pytest.raises(discord.Forbidden) as removed:
        await bot.get_partial_messageable(fake.channel.id).send("hello?")
    assert removed.value.code == 50001  # Missing Access
