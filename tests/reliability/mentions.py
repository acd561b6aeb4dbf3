"""Who a message the bot sent would notify, by Discord's allowed-mentions rules, and whom it may notify."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from tests.fake_discord import FakeDiscord, RecordedRequest

_TOKEN_PATH = re.compile(r"^/(?:interactions/\d+/([^/]+)/callback|webhooks/\d+/([^/]+))")
_CHANNEL_MESSAGE = re.compile(r"^/channels/(\d+)/messages(?:/(\d+))?$")


@dataclass(frozen=True)
class Write:
    """A message the bot created or edited, who would be notified, and who asked for it."""

    request: RecordedRequest
    notified: frozenset[str]
    requester: str | None
    has_allowed_mentions: bool


def message_body(request: RecordedRequest) -> dict | None:
    """The message fields of a request that writes text (interaction callbacks carry them under `data`)."""
    if request.method not in ("POST", "PATCH") or not isinstance(request.json, dict):
        return None
    body = request.json.get("data") if request.path.endswith("/callback") else request.json
    return body if isinstance(body, dict) and body.get("content") else None


def notified(body: dict, fake: FakeDiscord) -> frozenset[str]:
    """User ids, 'everyone' and 'role:<id>' that this body would ping."""
    content = body.get("content") or ""
    allowed = body.get("allowed_mentions")
    # Without allowed_mentions Discord parses everything in the content.
    parse = set(allowed.get("parse", [])) if allowed is not None else {"everyone", "users", "roles"}
    users = {str(u) for u in (allowed or {}).get("users", [])}
    roles = {str(r) for r in (allowed or {}).get("roles", [])}
    found: set[str] = set()
    if "everyone" in parse and re.search(r"@(everyone|here)\b", content):
        found.add("everyone")
    for user in re.findall(r"<@!?(\d+)>", content):
        if "users" in parse or user in users:
            found.add(user)
    for role in re.findall(r"<@&(\d+)>", content):
        if "roles" in parse or role in roles:
            found.add(f"role:{role}")
    reference = body.get("message_reference")
    if reference and (allowed is None or allowed.get("replied_user", True)):
        target = fake.store.messages.get(int(reference["message_id"]))
        if target is not None:
            found.add(str(target.author_id))
    return frozenset(found)


def requester(
    request: RecordedRequest, body: dict, fake: FakeDiscord, job_owner: Callable[[int], int | None]
) -> str | None:
    """The person this message answers: the interaction's user, the author replied to, or the job's owner."""
    if match := _TOKEN_PATH.match(request.path):
        handle = fake.interactions.by_token(match[1] or match[2])
        return str(handle.user.id) if handle else None
    reference = body.get("message_reference")
    if reference:
        target = fake.store.messages.get(int(reference["message_id"]))
        return str(target.author_id) if target else None
    match = _CHANNEL_MESSAGE.match(request.path)
    if match is None:
        return None
    message_id = int(match[2]) if match[2] else int((request.response or {}).get("id", 0))
    message = fake.store.messages.get(message_id)
    replied = (message.data.get("referenced_message") or {}).get("author") if message else None
    if replied:  # an edit of our reply to someone's remix
        return replied["id"]
    owner = job_owner(message_id)  # a result posted anew to the channel
    return str(owner) if owner is not None else None


def bot_writes(fake: FakeDiscord, job_owner: Callable[[int], int | None], since: int = 0) -> list[Write]:
    """Every answered POST/PATCH with text the bot sent (index >= since)."""
    writes = []
    for request in fake.requests[since:]:
        body = message_body(request)
        if body is None or not request.answered or request.status >= 300:
            continue
        writes.append(
            Write(request, notified(body, fake), requester(request, body, fake, job_owner), "allowed_mentions" in body)
        )
    return writes


def violations(writes: list[Write]) -> list[str]:
    """Writes that could ping anyone but their requester, or that leave mentions to Discord's defaults."""
    bad = []
    for write in writes:
        if not write.has_allowed_mentions:
            bad.append(f"{write.request!r}: no allowed_mentions")
        elif write.requester is None and write.notified:
            bad.append(f"{write.request!r}: pings {set(write.notified)} but answers nobody we know")
        elif not write.notified <= {write.requester}:
            bad.append(f"{write.request!r}: pings {set(write.notified)}, requester {write.requester}")
    return bad
