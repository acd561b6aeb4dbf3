"""A loopback fake Discord (REST, gateway, CDN) that the real discord.py client talks to in tests."""

from .discord_client import point_discord_py_at, running_client
from .gateway import GatewayLogEntry
from .interactions import InteractionHandle
from .messages import StoredAttachment, StoredMessage, Upload
from .models import FakeChannel, FakeGuild, FakeMember, FakeRole, FakeUser, Permission, World, build_default_world
from .rest import Injection, RecordedRequest
from .server import FakeDiscord

__all__ = [
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeMember",
    "FakeRole",
    "FakeUser",
    "GatewayLogEntry",
    "Injection",
    "InteractionHandle",
    "Permission",
    "RecordedRequest",
    "StoredAttachment",
    "StoredMessage",
    "Upload",
    "World",
    "build_default_world",
    "point_discord_py_at",
    "running_client",
]
