"""REST routes for registering application commands (global and per guild)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import UNKNOWN_GUILD, RestError, unknown
from .rest import RecordedRequest, Reply, Router

if TYPE_CHECKING:
    from .server import FakeDiscord

router = Router()


def _scope(fake: FakeDiscord, params: dict[str, str]) -> int | None:
    """The guild id of a guild route (None for global), checking the application id."""
    if params["app_id"] != str(fake.application_id):
        raise RestError(403, 50001, "Missing Access")
    guild_id = params.get("guild_id")
    if guild_id is None:
        return None
    if not guild_id.isdigit() or fake.world.find_guild(int(guild_id)) is None:
        raise unknown("Guild", UNKNOWN_GUILD)
    return int(guild_id)


def _command_id(params: dict[str, str]) -> int:
    if not params["command_id"].isdigit():
        raise RestError(404, 10063, "Unknown application command")
    return int(params["command_id"])


for prefix in ("/applications/{app_id}", "/applications/{app_id}/guilds/{guild_id}"):

    @router.route("GET", prefix + "/commands")
    async def list_commands(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
        """All commands of the scope."""
        return Reply(200, fake.commands.list(_scope(fake, params)))

    @router.route("PUT", prefix + "/commands")
    async def overwrite_commands(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
        """Bulk overwrite (what tree.sync() does)."""
        result = fake.commands.overwrite(_scope(fake, params), req.json or [])
        fake.signal.notify()
        return Reply(200, result)

    @router.route("POST", prefix + "/commands")
    async def upsert_command(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
        """Create or replace one command (201 when new)."""
        command, created = fake.commands.upsert(_scope(fake, params), req.json or {})
        fake.signal.notify()
        return Reply(201 if created else 200, command)

    @router.route("GET", prefix + "/commands/{command_id}")
    async def get_command(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
        """One command."""
        return Reply(200, fake.commands.get(_scope(fake, params), _command_id(params)))

    @router.route("PATCH", prefix + "/commands/{command_id}")
    async def edit_command(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
        """Change one command."""
        command = fake.commands.edit(_scope(fake, params), _command_id(params), req.json or {})
        fake.signal.notify()
        return Reply(200, command)

    @router.route("DELETE", prefix + "/commands/{command_id}")
    async def delete_command(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
        """Delete one command."""
        fake.commands.delete(_scope(fake, params), _command_id(params))
        fake.signal.notify()
        return Reply(204)
