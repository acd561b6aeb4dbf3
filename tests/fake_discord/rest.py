"""REST plumbing: request recording, fault injection, routing and Discord-shaped responses."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .errors import RestError
from .messages import Upload

if TYPE_CHECKING:
    from .server import FakeDiscord

API_PREFIX = "/api/v10"


@dataclass
class RecordedRequest:
    """One HTTP request the client made, and what the fake answered."""

    index: int
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any = None
    files: list[Upload] = field(default_factory=list)
    authorized: bool = False
    status: int | None = None
    response: Any = None
    injected: bool = False
    received_at: float = field(default_factory=time.monotonic)
    answered_at: float | None = None

    @property
    def answered(self) -> bool:
        """Whether the fake has replied yet."""
        return self.status is not None

    def __repr__(self) -> str:
        files = f" files={[f.filename for f in self.files]}" if self.files else ""
        injected = " injected" if self.injected else ""
        return f"<{self.method} {self.path} {self.query or ''} -> {self.status}{injected}{files}>"


@dataclass
class Injection:
    """A fault: requests matching method, path regex (and `where`) get `status` (or just `delay`) `times` times.

    With `lose_response` the request takes effect first and only its answer is replaced: by `status`, or with
    `status=None` by a dropped connection (recorded as status 0), as when an answer is lost on the way back; the
    client cannot tell either from a request that never arrived.
    """

    method: str
    pattern: re.Pattern[str]
    status: int | None
    times: int | None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    retry_after: float = 0.05
    where: Callable[[RecordedRequest], Any] | None = None
    hits: int = 0
    lose_response: bool = False

    @property
    def exhausted(self) -> bool:
        """Whether it has fired `times` times."""
        return self.times is not None and self.hits >= self.times

    def matches(self, record: RecordedRequest) -> bool:
        """Whether a request is affected."""
        if self.exhausted or self.method not in ("*", record.method) or self.pattern.search(record.path) is None:
            return False
        return self.where is None or bool(self.where(record))

    def reply(self) -> Reply:
        """The injected error, shaped like Discord's (429s carry retry_after, Via and X-RateLimit-*)."""
        status = self.status or 500
        headers = dict(self.headers)
        body = self.body
        if status == 429:
            bucket = hashlib.md5(self.pattern.pattern.encode()).hexdigest()[:16]
            headers = {
                "Via": "1.1 google",
                "Retry-After": str(max(1, round(self.retry_after))),
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + self.retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{self.retry_after:.3f}",
                "X-RateLimit-Bucket": bucket,
                "X-RateLimit-Scope": "user",
                **headers,
            }
            if body is None:
                body = {"message": "You are being rate limited.", "retry_after": self.retry_after, "global": False}
        elif body is None:
            body = DEFAULT_ERROR_BODIES.get(status, {"message": f"{status}: Injected error", "code": 0})
        return Reply(status, body, headers)


DEFAULT_ERROR_BODIES: dict[int, Any] = {
    400: {"message": "400: Bad Request", "code": 0},
    401: {"message": "401: Unauthorized", "code": 0},
    403: {"message": "Missing Permissions", "code": 50013},
    404: {"message": "Unknown Message", "code": 10008},
    500: {"message": "500: Internal Server Error", "code": 0},
    502: {"message": "502: Bad Gateway", "code": 0},
    503: {"message": "503: Service Unavailable", "code": 0},
    504: {"message": "504: Gateway Timeout", "code": 0},
}


@dataclass
class Reply:
    """What a route answers: status, JSON body (None for no body) and extra headers."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    content_type: str = "application/json"


Handler = Callable[["FakeDiscord", RecordedRequest, dict[str, str]], Awaitable[Reply]]


@dataclass
class Route:
    """A method, a path template like `/channels/{channel_id}/messages` and its handler."""

    method: str
    template: str
    handler: Handler
    auth: bool = True
    regex: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.template)
        self.regex = re.compile(f"^{pattern}$")


class Router:
    """Routes collected from the route modules."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def route(self, method: str, template: str, *, auth: bool = True) -> Callable[[Handler], Handler]:
        """Decorator registering a handler."""

        def register(handler: Handler) -> Handler:
            self.routes.append(Route(method, template, handler, auth))
            return handler

        return register

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The route and its path parameters; raises 405 when only the method is wrong."""
        path_matched = False
        for route in self.routes:
            match = route.regex.match(path)
            if match is None:
                continue
            if route.method == method:
                return route, match.groupdict()
            path_matched = True
        if path_matched:
            raise RestError(405, 0, "405: Method Not Allowed")
        return None


async def read_request(request: web.Request, path: str, index: int) -> RecordedRequest:
    """Record method, path, query, headers (no Authorization), JSON or payload_json and file parts."""
    headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
    record = RecordedRequest(index, request.method, path, dict(request.query), headers)
    record.authorized = "Authorization" in request.headers
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if part.name == "payload_json":
                record.json = json.loads(await part.text())  # type: ignore[union-attr]
            elif part.filename is not None:  # type: ignore[union-attr]
                data = await part.read()  # type: ignore[union-attr]
                content_type = part.headers.get("Content-Type", "application/octet-stream")
                record.files.append(Upload(part.name or "", part.filename, content_type, bytes(data)))  # type: ignore[union-attr]
    elif request.can_read_body:
        text = await request.text()
        if text:
            try:
                record.json = json.loads(text)
            except json.JSONDecodeError as exc:
                raise RestError(400, 50109, "The request body contains invalid JSON.") from exc
    return record


def web_response(reply: Reply) -> web.Response:
    """Serialize a reply with `Content-Type: application/json` exactly (discord.py checks it)."""
    headers = {**rate_limit_headers(), **reply.headers}
    if reply.raw is not None:
        return web.Response(status=reply.status, body=reply.raw, headers={"Content-Type": reply.content_type})
    if reply.body is None:
        return web.Response(status=reply.status, headers=headers)
    headers["Content-Type"] = "application/json"
    return web.Response(status=reply.status, body=json.dumps(reply.body).encode(), headers=headers)


def rate_limit_headers() -> dict[str, str]:
    """Generous bucket headers, so discord.py never queues requests behind a limit of 1."""
    return {
        "X-RateLimit-Limit": "50",
        "X-RateLimit-Remaining": "49",
        "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
        "X-RateLimit-Reset-After": "1.000",
    }


class RestApi:
    """The aiohttp handler for everything under /api/v10."""

    def __init__(self, fake: FakeDiscord, router: Router) -> None:
        self._fake = fake
        self._router = router
        self.requests: list[RecordedRequest] = []
        self.injections: list[Injection] = []

    async def handle(self, request: web.Request) -> web.Response:
        """Record, inject faults, check the token, route, and answer."""
        path = request.path
        if path.startswith(API_PREFIX):
            path = path[len(API_PREFIX) :] or "/"
        try:
            record = await read_request(request, path, len(self.requests))
        except RestError as exc:
            return web_response(Reply(exc.status, exc.body()))
        self.requests.append(record)
        self._fake.signal.notify()
        reply = await self._answer(request, record)
        if reply is None:  # the answer is lost: cut the connection instead of sending it
            record.status, record.answered_at = 0, time.monotonic()
            self._fake.signal.notify()
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)  # never reaches the client
        record.status, record.response, record.answered_at = reply.status, reply.body, time.monotonic()
        self._fake.signal.notify()
        return web_response(reply)

    async def _answer(self, request: web.Request, record: RecordedRequest) -> Reply | None:
        injection = next((i for i in self.injections if i.matches(record)), None)
        if injection is not None:
            injection.hits += 1
            if injection.delay:
                await asyncio.sleep(injection.delay)
            if injection.status is not None and not injection.lose_response:
                record.injected = True
                return injection.reply()
        reply = await self._route(request, record)
        if injection is not None and injection.lose_response:
            record.injected = True
            return injection.reply() if injection.status is not None else None
        return reply

    async def _route(self, request: web.Request, record: RecordedRequest) -> Reply:
        try:
            resolved = self._router.resolve(record.method, record.path)
            if resolved is None:
                return Reply(404, {"message": "404: Not Found", "code": 0})
            route, params = resolved
            if route.auth and request.headers.get("Authorization") != f"Bot {self._fake.token}":
                return Reply(401, {"message": "401: Unauthorized", "code": 0})
            return await route.handler(self._fake, record, params)
        except RestError as exc:
            return Reply(exc.status, exc.body())
