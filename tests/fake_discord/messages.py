"""Messages and attachments the fake stores, with Discord's create/edit rules and limits."""

from __future__ import annotations

import copy
import io
import mimetypes
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from .components import validate_components
from .errors import RestError, form_error
from .models import FakeUser, SnowflakeGenerator, World, iso_now
from .payloads import JSON, user_payload

EPHEMERAL = 1 << 6
LOADING = 1 << 7
SUPPRESS_EMBEDS = 1 << 2
SUPPRESS_NOTIFICATIONS = 1 << 12
IS_COMPONENTS_V2 = 1 << 15
SETTABLE_FLAGS = SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | IS_COMPONENTS_V2
MAX_CONTENT = 2000
MAX_ATTACHMENTS = 10
DEFAULT_ATTACHMENT_LIMIT = 10 * 1024 * 1024
MESSAGE_TYPE_DEFAULT = 0
MESSAGE_TYPE_REPLY = 19
MESSAGE_TYPE_CHAT_INPUT_COMMAND = 20
MESSAGE_TYPE_CONTEXT_MENU_COMMAND = 23
NONCE_WINDOW = 120.0  # seconds an enforced nonce stays unique; Discord says "the past few minutes"


@dataclass
class Upload:
    """One file part of a multipart request."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class StoredAttachment:
    """An uploaded file, served back at its URL."""

    id: int
    channel_id: int
    filename: str
    content_type: str
    data: bytes
    width: int | None = None
    height: int | None = None
    description: str | None = None
    ephemeral: bool = False

    def path(self) -> str:
        """Where the fake's CDN serves it; like Discord's, the URL's file name has no path separators."""
        name = quote(re.sub(r"[/\\]", "_", self.filename))
        return f"/attachments/{self.channel_id}/{self.id}/{name}"

    def payload(self, base_url: str) -> JSON:
        """The attachment object."""
        data: JSON = {
            "id": str(self.id),
            "filename": self.filename,
            "size": len(self.data),
            "url": base_url + self.path(),
            "proxy_url": base_url + "/media" + self.path(),
            "content_type": self.content_type,
            "flags": 0,
        }
        if self.width is not None:
            data.update(width=self.width, height=self.height)
        if self.description is not None:
            data["description"] = self.description
        if self.ephemeral:
            data["ephemeral"] = True
        return data


@dataclass
class StoredMessage:
    """A message as the REST API returns it, plus what the fake needs to know about it."""

    data: JSON
    guild_id: int | None
    ephemeral: bool = False
    deleted: bool = False
    versions: list[JSON] = field(default_factory=list)

    @property
    def id(self) -> int:
        """The message id."""
        return int(self.data["id"])

    @property
    def channel_id(self) -> int:
        """The channel id."""
        return int(self.data["channel_id"])

    @property
    def author_id(self) -> int:
        """The author's user id."""
        return int(self.data["author"]["id"])


def sniff_image(data: bytes) -> tuple[str | None, int | None, int | None]:
    """(content type, width, height) when `data` is an image Pillow can read."""
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            mime = Image.MIME.get(image.format or "")
            return mime, image.width, image.height
    except Exception:
        return None, None, None


class MessageStore:
    """All messages by id and by channel, and every uploaded attachment."""

    def __init__(self, world: World, ids: SnowflakeGenerator, base_url: Callable[[], str]) -> None:
        self._world = world
        self._ids = ids
        self._base_url = base_url
        self.messages: dict[int, StoredMessage] = {}
        self.attachments: dict[int, StoredAttachment] = {}
        self.attachment_size_limit = DEFAULT_ATTACHMENT_LIMIT
        self._nonces: dict[tuple[int, str], tuple[int, float]] = {}  # (author, nonce) -> (message id, created)

    def add_attachment(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str | None = None,
        *,
        description: str | None = None,
        ephemeral: bool = False,
    ) -> StoredAttachment:
        """Store a file; the content type is sniffed like Discord does when it says octet-stream."""
        sniffed, width, height = sniff_image(data)
        if not content_type or content_type == "application/octet-stream":
            content_type = sniffed or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        attachment = StoredAttachment(
            self._ids.next(), channel_id, filename, content_type, data, width, height, description, ephemeral
        )
        self.attachments[attachment.id] = attachment
        return attachment

    def get(self, message_id: int) -> StoredMessage | None:
        """A live (not deleted) message."""
        message = self.messages.get(message_id)
        return None if message is None or message.deleted else message

    def by_nonce(self, author_id: int, nonce: str) -> StoredMessage | None:
        """The live message `author_id` created with `nonce` within the last NONCE_WINDOW seconds."""
        found = self._nonces.get((author_id, nonce))
        if found is None or time.monotonic() - found[1] > NONCE_WINDOW:
            return None
        return self.get(found[0])

    def in_channel(self, channel_id: int, *, include_ephemeral: bool = False) -> list[StoredMessage]:
        """Live messages in a channel, oldest first."""
        return [
            m
            for m in self.messages.values()
            if m.channel_id == channel_id and not m.deleted and (include_ephemeral or not m.ephemeral)
        ]

    def create(
        self,
        channel_id: int,
        guild_id: int | None,
        author: FakeUser,
        body: JSON,
        uploads: list[Upload],
        *,
        extra: JSON | None = None,
        flags: int = 0,
        message_type: int = MESSAGE_TYPE_DEFAULT,
    ) -> StoredMessage:
        """Validate and store a new message; `extra` adds fields such as webhook_id or interaction_metadata."""
        validate_body(body, uploads, self.attachment_size_limit)
        flags |= int(body.get("flags") or 0) & SETTABLE_FLAGS
        attachments = self._attachments(channel_id, body, uploads, [], ephemeral=bool(flags & EPHEMERAL))
        data: JSON = {
            "id": str(self._ids.next()),
            "channel_id": str(channel_id),
            "type": message_type,
            "content": body.get("content") or "",
            "author": user_payload(author),
            "attachments": attachments,
            "embeds": copy.deepcopy(body.get("embeds") or []),
            "components": copy.deepcopy(body.get("components") or []),
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
            "tts": bool(body.get("tts")),
            "timestamp": iso_now(),
            "edited_timestamp": None,
            "flags": flags,
        }
        if body.get("nonce") is not None:
            data["nonce"] = body["nonce"]
        data.update(copy.deepcopy(extra or {}))
        reference = body.get("message_reference")
        if reference:
            self._attach_reference(data, reference, channel_id, guild_id)
        self._fill_mentions(data, body)
        check_not_empty(data, body, loading=bool(flags & LOADING))
        message = StoredMessage(data, guild_id, ephemeral=bool(flags & EPHEMERAL))
        self.messages[message.id] = message
        if body.get("nonce") is not None:
            self._nonces[(author.id, str(body["nonce"]))] = (message.id, time.monotonic())
        return message

    def edit(self, message: StoredMessage, body: JSON, uploads: list[Upload], *, clear_loading: bool = False) -> None:
        """Apply a PATCH body: only the fields present change; `attachments` lists what is kept."""
        validate_body(body, uploads, self.attachment_size_limit)
        old = copy.deepcopy(message.data)
        data = message.data
        for key in ("content", "embeds", "components"):
            if key in body:
                data[key] = copy.deepcopy(body[key]) if body[key] is not None else ([] if key != "content" else "")
        if "flags" in body and body["flags"] is not None:
            data["flags"] = (data["flags"] & ~SUPPRESS_EMBEDS) | (int(body["flags"]) & SUPPRESS_EMBEDS)
        if clear_loading:
            data["flags"] &= ~LOADING
        if "attachments" in body or uploads:
            data["attachments"] = self._attachments(
                message.channel_id, body, uploads, data["attachments"], ephemeral=message.ephemeral
            )
        self._fill_mentions(data, body)
        check_not_empty(data, body, loading=bool(data["flags"] & LOADING))
        data["edited_timestamp"] = iso_now()
        message.versions.append(old)

    def _attachments(
        self, channel_id: int, body: JSON, uploads: list[Upload], existing: list[JSON], *, ephemeral: bool
    ) -> list[JSON]:
        """Resolve `attachments` entries: indexes name new `files[n]`, snowflakes keep existing ones."""
        by_index: dict[int, Upload] = {}
        for upload in uploads:
            match = re.fullmatch(r"files\[(\d+)\]", upload.field) or re.fullmatch(r"file(\d*)", upload.field)
            if match is None:
                raise form_error([upload.field], "UNKNOWN_FIELD", f"Unexpected multipart field {upload.field!r}.")
            by_index[int(match.group(1) or 0)] = upload
        spec = body.get("attachments")
        kept = {a["id"]: a for a in existing}
        result: list[JSON] = []
        used: set[int] = set()
        if spec is None:
            result = list(existing)
            spec = []
        for position, entry in enumerate(spec):
            ident = int(entry["id"])
            if ident in by_index:
                upload = by_index[ident]
                used.add(ident)
                stored = self.add_attachment(
                    channel_id,
                    entry.get("filename") or upload.filename,
                    upload.data,
                    upload.content_type,
                    description=entry.get("description"),
                    ephemeral=ephemeral,
                )
                result.append(stored.payload(self._base_url()))
            elif str(ident) in kept:
                result.append(kept[str(ident)])
            else:
                raise form_error(
                    ["attachments", position, "id"], "ATTACHMENT_NOT_FOUND", "Unknown attachment or file index."
                )
        for index in sorted(set(by_index) - used):
            upload = by_index[index]
            stored = self.add_attachment(
                channel_id, upload.filename, upload.data, upload.content_type, ephemeral=ephemeral
            )
            result.append(stored.payload(self._base_url()))
        if len(result) > MAX_ATTACHMENTS:
            raise form_error(["attachments"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        return result

    def _attach_reference(self, data: JSON, reference: JSON, channel_id: int, guild_id: int | None) -> None:
        target_id = int(reference.get("message_id") or 0)
        target = self.get(target_id)
        ref_channel = int(reference.get("channel_id") or channel_id)
        if target is None or target.channel_id != ref_channel or target.ephemeral:
            if reference.get("fail_if_not_exists", True):
                raise form_error(["message_reference"], "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
            return
        data["type"] = MESSAGE_TYPE_REPLY
        data["message_reference"] = {
            "type": 0,
            "message_id": str(target.id),
            "channel_id": str(target.channel_id),
            "guild_id": str(guild_id) if guild_id else None,
        }
        data["referenced_message"] = referenced_copy(target.data)

    def _fill_mentions(self, data: JSON, body: JSON) -> None:
        ids = [int(x) for x in re.findall(r"<@!?(\d{15,20})>", data.get("content") or "")]
        replied = data.get("referenced_message")
        allowed = body.get("allowed_mentions") or {}
        if replied is not None and allowed.get("replied_user", True):
            ids.append(int(replied["author"]["id"]))
        users = [self._world.users[i] for i in dict.fromkeys(ids) if i in self._world.users]
        data["mentions"] = [user_payload(u) for u in users]
        data["mention_roles"] = re.findall(r"<@&(\d{15,20})>", data.get("content") or "")


def referenced_copy(data: JSON) -> JSON:
    """The message as it appears under `referenced_message` (one level deep)."""
    snapshot = copy.deepcopy(data)
    snapshot.pop("referenced_message", None)
    return snapshot


def validate_body(body: JSON, uploads: list[Upload], size_limit: int) -> None:
    """Discord's message limits: content length, embeds, components, attachment sizes."""
    content = body.get("content")
    if content is not None and not isinstance(content, str):
        raise form_error(["content"], "BASE_TYPE_STRING", "Must be a string.")
    if content and len(content) > MAX_CONTENT:
        raise form_error(["content"], "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length.")
    validate_embeds(body.get("embeds") or [])
    components = body.get("components")
    if components:
        validate_components(components, v2=bool(int(body.get("flags") or 0) & IS_COMPONENTS_V2))
    for upload in uploads:
        if len(upload.data) > size_limit:
            raise RestError(413, 40005, "Request entity too large")
    if len(uploads) > MAX_ATTACHMENTS:
        raise form_error(["files"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")


def validate_embeds(embeds: list[JSON]) -> None:
    """Embed count and text limits (title 256, description 4096, 25 fields, 6000 in total)."""
    if len(embeds) > 10:
        raise form_error(["embeds"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    for index, embed in enumerate(embeds):
        limits = {"title": 256, "description": 4096}
        total = 0
        for key, limit in limits.items():
            text = embed.get(key) or ""
            total += len(text)
            if len(text) > limit:
                raise form_error(["embeds", index, key], "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")
        fields = embed.get("fields") or []
        if len(fields) > 25:
            raise form_error(["embeds", index, "fields"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        for f_index, item in enumerate(fields):
            for key, limit in (("name", 256), ("value", 1024)):
                text = str(item.get(key) or "")
                total += len(text)
                if not text or len(text) > limit:
                    raise form_error(
                        ["embeds", index, "fields", f_index, key],
                        "BASE_TYPE_BAD_LENGTH",
                        f"Must be between 1 and {limit} in length.",
                    )
        footer = (embed.get("footer") or {}).get("text") or ""
        author = (embed.get("author") or {}).get("name") or ""
        total += len(footer) + len(author)
        if total > 6000:
            raise form_error(["embeds", index], "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")


def check_not_empty(data: JSON, body: JSON, *, loading: bool) -> None:
    """Discord refuses messages with nothing in them (50006)."""
    if loading:
        return
    if data.get("content") or data.get("embeds") or data.get("attachments") or data.get("components"):
        return
    if body.get("sticker_ids") or body.get("poll"):
        return
    raise RestError(400, 50006, "Cannot send an empty message")
