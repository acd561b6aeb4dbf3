"""The gateway websocket: HELLO, IDENTIFY/READY, heartbeats, RESUME with replay, shards, server-side faults.

Sharding as Discord does it: an IDENTIFY may carry `shard: [id, count]`; that session gets READY and GUILD_CREATE
only for the guilds with `(guild_id >> 22) % count == id`, and every later event about a guild goes to its shard's
session (events outside guilds, such as DMs, to shard 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .models import FakeGuild, World
from .payloads import JSON, guild_create_payload, member_payload, ready_payload
from .waiting import ChangeSignal

log = logging.getLogger(__name__)

DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE, VOICE_STATE = 0, 1, 2, 3, 4
RESUME, RECONNECT, REQUEST_MEMBERS, INVALID_SESSION, HELLO, HEARTBEAT_ACK = 6, 7, 8, 9, 10, 11

GUILD_MEMBERS, GUILD_PRESENCES, MESSAGE_CONTENT = 1 << 1, 1 << 8, 1 << 15
PRIVILEGED_INTENTS = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT
GUILD_EVENTS = {"GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE"}  # these name their guild in `id`, not `guild_id`


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard Discord sends a guild's events on."""
    return (guild_id >> 22) % shard_count


@dataclass
class GatewayLogEntry:
    """Something that happened on the gateway: connect, identify, resume, heartbeat, disconnect, ..."""

    kind: str
    connection: int
    data: Any = None


@dataclass
class GatewayConnection:
    """One websocket connection, with its own zlib-stream context when the client asked for one."""

    id: int
    ws: web.WebSocketResponse
    request: web.Request
    compressor: Any = None
    session: GatewaySession | None = None
    closed: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, payload: JSON) -> None:
        """Send one gateway payload (one zlib-stream chunk ending in Z_SYNC_FLUSH when compressing)."""
        text = json.dumps(payload, separators=(",", ":"))
        async with self.lock:
            if self.compressor is not None:
                chunk = self.compressor.compress(text.encode()) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
                await self.ws.send_bytes(chunk)
            else:
                await self.ws.send_str(text)


@dataclass
class GatewaySession:
    """A session: its sequence counter and every dispatch, kept for RESUME replay."""

    id: str
    intents: int
    shard: list[int] | None = None
    seq: int = 0
    events: list[JSON] = field(default_factory=list)
    connection: GatewayConnection | None = None
    valid: bool = True
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def shard_id(self) -> int:
        """This session's shard (0 when it did not ask for sharding)."""
        return int(self.shard[0]) if self.shard else 0

    @property
    def shard_count(self) -> int:
        """How many shards it said there are (1 without sharding)."""
        return int(self.shard[1]) if self.shard else 1

    def serves(self, guild_id: int | None) -> bool:
        """Whether a guild's events (or, for None, events outside guilds) go to this session."""
        if guild_id is None:
            return self.shard_id == 0
        return shard_of(guild_id, self.shard_count) == self.shard_id


class Gateway:
    """Serves the gateway for one bot; dispatches go to the latest session of the shard they belong to."""

    def __init__(self, world: World, signal: ChangeSignal, token: Callable[[], str], ws_base: Callable[[], str]):
        self._world = world
        self._signal = signal
        self._token = token
        self._ws_base = ws_base
        self.heartbeat_interval_ms = 41_250
        self.ack_heartbeats = True
        self.allowed_privileged_intents = PRIVILEGED_INTENTS
        self.guilds_per_shard = 1000  # GET /gateway/bot recommends a shard per this many guilds, as Discord does
        self.max_guilds_per_shard = 2500  # more guilds than this on one session: closed with 4011, as by Discord
        self.max_concurrency = 1  # session_start_limit.max_concurrency (large bots get 16 and more)
        self.session_starts = 0  # successful IDENTIFYs, counted against session_start_limit
        self.connections: list[GatewayConnection] = []
        self.sessions: dict[str, GatewaySession] = {}
        self.shards: dict[int, GatewaySession] = {}  # the latest identified or resumed session of each shard id
        self.log: list[GatewayLogEntry] = []

    @property
    def current(self) -> GatewaySession | None:
        """The session of shard 0 (the only one of an unsharded bot)."""
        return self.shards.get(0)

    @property
    def intents(self) -> int:
        """Intents of the current session (0 before IDENTIFY)."""
        return self.current.intents if self.current else 0

    @property
    def connected(self) -> bool:
        """Whether the current session has a live connection."""
        conn = self.current.connection if self.current else None
        return conn is not None and not conn.closed

    def bot_guilds(self) -> list[FakeGuild]:
        """The guilds the bot is a member of (the ones the gateway tells it about)."""
        return [g for g in self._world.guilds if self._world.bot_user.id in g.members]

    def recommended_shards(self) -> int:
        """The shard count GET /gateway/bot answers: one per `guilds_per_shard` guilds."""
        return max(1, math.ceil(len(self.bot_guilds()) / self.guilds_per_shard))

    def session_for(self, guild_id: int | None) -> GatewaySession | None:
        """The session a guild's events (None: events outside guilds) are dispatched on, if one identified."""
        return next((s for s in self.shards.values() if s.serves(guild_id)), None)

    def intents_for(self, guild_id: int | None) -> int:
        """Intents of the session that receives a guild's events (0 before IDENTIFY)."""
        session = self.session_for(guild_id)
        return session.intents if session else 0

    def _record(self, kind: str, conn: GatewayConnection, data: Any = None) -> None:
        self.log.append(GatewayLogEntry(kind, conn.id, data))
        self._signal.notify()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The websocket endpoint (`/gateway` and the resume URL)."""
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        compress = request.query.get("compress")
        conn = GatewayConnection(len(self.connections) + 1, ws, request)
        if compress == "zlib-stream":
            conn.compressor = zlib.compressobj()
        self.connections.append(conn)
        self._record("connect", conn, {"path": request.path, "query": dict(request.query)})
        if request.query.get("encoding", "json") != "json":
            await ws.close(code=4002, message=b"Error while decoding payload.")
        elif request.query.get("v", "10") != "10":
            await ws.close(code=4012, message=b"Invalid API version.")
        else:
            hello = {"heartbeat_interval": self.heartbeat_interval_ms}
            await conn.send({"op": HELLO, "d": hello, "s": None, "t": None})
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
                await self._on_frame(conn, json.loads(msg.data))
        finally:
            conn.closed = True
            if conn.session is not None and conn.session.connection is conn:
                conn.session.connection = None
            self._record("disconnect", conn, {"close_code": ws.close_code})
        return ws

    async def _on_frame(self, conn: GatewayConnection, frame: JSON) -> None:
        op, data = frame.get("op"), frame.get("d")
        if op == HEARTBEAT:
            self._record("heartbeat", conn, data)
            if self.ack_heartbeats:
                await conn.send({"op": HEARTBEAT_ACK, "d": None, "s": None, "t": None})
        elif op == IDENTIFY:
            await self._identify(conn, data)
        elif op == RESUME:
            await self._resume(conn, data)
        elif conn.session is None:
            await conn.ws.close(code=4003, message=b"Not authenticated.")
        elif op == PRESENCE:
            self._record("presence", conn, data)
        elif op == REQUEST_MEMBERS:
            self._record("request_members", conn, data)
            await self._send_member_chunk(conn.session, data)
        elif op == VOICE_STATE:
            self._record("voice_state", conn, data)
        else:
            await conn.ws.close(code=4001, message=b"Unknown opcode.")

    async def _identify(self, conn: GatewayConnection, data: JSON) -> None:
        redacted = {k: v for k, v in data.items() if k != "token"}
        self._record("identify", conn, redacted)
        if conn.session is not None:
            await conn.ws.close(code=4005, message=b"Already authenticated.")
            return
        if data.get("token") != self._token():
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = int(data.get("intents", 0))
        if intents & PRIVILEGED_INTENTS & ~self.allowed_privileged_intents:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        shard = data.get("shard")
        if shard is not None and not _valid_shard(shard):
            await conn.ws.close(code=4010, message=b"Invalid shard.")
            return
        session = GatewaySession(uuid.uuid4().hex, intents, list(shard) if shard is not None else None)
        guilds = [g for g in self.bot_guilds() if session.serves(g.id)]
        if len(guilds) > self.max_guilds_per_shard:
            await conn.ws.close(code=4011, message=b"Sharding required.")
            return
        self.sessions[session.id] = session
        self.shards[session.shard_id] = session
        self.session_starts += 1
        conn.session = session
        session.connection = conn
        resume_url = self._ws_base() + "/gateway/resume"
        ready = ready_payload(self._world, session.id, resume_url, session.shard, guilds)
        await self.dispatch("READY", ready, session)
        for guild in guilds:
            payload = guild_create_payload(guild, self._world.bot_user.id)
            if not intents & GUILD_MEMBERS:
                # Without the members intent Discord only sends the bot's own member.
                payload["members"] = [m for m in payload["members"] if m["user"]["id"] == str(self._world.bot_user.id)]
            await self.dispatch("GUILD_CREATE", payload, session)
        self._record("ready_sent", conn, {"session_id": session.id, "seq": session.seq})

    async def _resume(self, conn: GatewayConnection, data: JSON) -> None:
        self._record("resume", conn, {k: v for k, v in data.items() if k != "token"})
        session = self.sessions.get(str(data.get("session_id")))
        if session is None or not session.valid or data.get("token") != self._token():
            await conn.send({"op": INVALID_SESSION, "d": False, "s": None, "t": None})
            return
        last_seen = int(data.get("seq") or 0)
        async with session.lock:
            conn.session = session
            session.connection = conn
            self.shards[session.shard_id] = session
            for frame in session.events:
                if frame["s"] > last_seen:
                    await conn.send(frame)
            session.seq += 1
            resumed = {"op": DISPATCH, "t": "RESUMED", "s": session.seq, "d": {"_trace": ["fake-discord"]}}
            session.events.append(resumed)
            await conn.send(resumed)
        self._record("resumed", conn, {"replayed_after": last_seen, "seq": session.seq})

    async def _send_member_chunk(self, session: GatewaySession, data: JSON) -> None:
        guild = self._world.find_guild(int(data["guild_id"]))
        if guild is None:
            return
        members = list(guild.members.values())
        if data.get("user_ids"):
            wanted = {int(u) for u in data["user_ids"]}
            members = [m for m in members if m.user.id in wanted]
        if data.get("query"):
            members = [m for m in members if m.user.username.lower().startswith(data["query"].lower())]
        if data.get("limit"):
            members = members[: int(data["limit"])]
        chunk: JSON = {
            "guild_id": str(guild.id),
            "members": [member_payload(m) for m in members],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        await self.dispatch("GUILD_MEMBERS_CHUNK", chunk, session)

    async def dispatch(self, event: str, data: JSON, session: GatewaySession | None = None) -> int:
        """Send a DISPATCH with the next sequence number on the shard it belongs to; kept for replay if the
        client is away."""
        if session is None:
            guild_id = data.get("guild_id") or (data.get("id") if event in GUILD_EVENTS else None)
            session = self.session_for(int(guild_id) if guild_id is not None else None)
        if session is None:
            raise RuntimeError(f"fake Discord: no gateway session for {event} yet; is the client connected?")
        async with session.lock:
            session.seq += 1
            frame = {"op": DISPATCH, "t": event, "s": session.seq, "d": data}
            session.events.append(frame)
            conn = session.connection
            if conn is not None and not conn.closed:
                try:
                    await conn.send(frame)
                except (ConnectionError, RuntimeError):
                    log.debug("dispatch %s (s=%s) not delivered; it will be replayed on RESUME", event, session.seq)
        self._signal.notify()
        return session.seq

    def _live_connection(self, shard: int = 0) -> GatewayConnection:
        session = self.shards.get(shard)
        conn = session.connection if session else None
        if conn is None or conn.closed:
            raise RuntimeError(f"fake Discord: no live gateway connection for shard {shard}")
        return conn

    async def send_reconnect(self, shard: int = 0) -> None:
        """Send op 7 RECONNECT; the client should close and RESUME."""
        conn = self._live_connection(shard)
        self._record("reconnect_sent", conn)
        await conn.send({"op": RECONNECT, "d": None, "s": None, "t": None})

    async def invalidate_session(self, *, resumable: bool = False, shard: int = 0) -> None:
        """Send op 9 INVALID_SESSION; when not resumable the session is forgotten and the client re-IDENTIFYs."""
        conn = self._live_connection(shard)
        if not resumable and conn.session is not None:
            conn.session.valid = False
        self._record("invalid_session_sent", conn, resumable)
        await conn.send({"op": INVALID_SESSION, "d": resumable, "s": None, "t": None})

    async def drop(self, code: int | None = None, shard: int = 0) -> None:
        """Drop the live connection: abort TCP (code None, the client sees 1006) or close with `code`."""
        conn = self._live_connection(shard)
        self._record("dropped", conn, code)
        conn.closed = True
        if conn.session is not None and conn.session.connection is conn:
            conn.session.connection = None
        if code is None:
            transport = conn.request.transport
            if transport is not None:
                transport.abort()
        else:
            await asyncio.wait_for(conn.ws.close(code=code, message=b"fake Discord closed the connection"), 5)

    async def close_all(self) -> None:
        """Close every open websocket (server shutdown)."""
        for conn in self.connections:
            if not conn.ws.closed:
                with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
                    await asyncio.wait_for(conn.ws.close(code=1001, message=b"fake Discord shutting down"), 2)


def _valid_shard(shard: object) -> bool:
    """Discord's rule for IDENTIFY's `shard`: [shard_id, num_shards] with 0 <= shard_id < num_shards."""
    if not isinstance(shard, list) or len(shard) != 2 or not all(type(n) is int for n in shard):
        return False
    shard_id, count = shard
    return count >= 1 and 0 <= shard_id < count
