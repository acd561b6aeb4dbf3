"""The real bot as a child process against the loopback fake Discord, and ways to look at what it did."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fake_discord import FakeDiscord, FakeUser, RecordedRequest

ROOT = Path(__file__).resolve().parents[2]
RESULT_FILE = re.compile(r"^imagine-(\d+)\.(?:png|jpg)$")


def write_config(
    folder: Path,
    fake: FakeDiscord,
    model_dir: Path,
    *,
    limits: dict[str, int] | None = None,
    preview_every: int = 2,
    api_base: str | None = None,
    more_models: dict[str, Path] | None = None,
    generation: dict[str, float] | None = None,
) -> Path:
    """A config for the tiny model (the default; `more_models`: name → source) with its data under
    `folder/data`, talking to the fake unless `api_base` says otherwise; returns its path.
    `generation`: more `[generation]` keys."""
    limits = {"max_steps": 100, "max_queued_per_user": 20} | (limits or {})
    limit_lines = "\n".join(f"{key} = {value}" for key, value in limits.items())
    generation_lines = "\n".join(f"{key} = {value}" for key, value in (generation or {}).items())
    model_tables = "".join(
        f'\n[[models]]\nname = "{name}"\nsource = "{source}"\nsteps = 4\nwidth = 64\nheight = 64\n'
        for name, source in {"tiny": model_dir, **(more_models or {})}.items()
    )
    path = folder / "config.toml"
    path.write_text(
        f"""
[discord]
api_base = "{api_base or fake.api_base}"
gateway_url = "{fake.gateway_url}"
guild_ids = [{fake.guild.id}]

[storage]
path = "data/imagine.sqlite3"
images_dir = "data/images"

[generation]
device = "cpu"
default_model = "tiny"
max_batch = 4
preview_every = {preview_every}
{generation_lines}

[limits]
{limit_lines}
{model_tables}"""
    )
    return path


def add_members(fake: FakeDiscord, names: list[str]) -> list[FakeUser]:
    """More plain members of the fake's guild."""
    users = []
    for name in names:
        user = FakeUser(fake.ids.next(), name, name.title())
        fake.guild.add_member(user)
        fake.world.users[user.id] = user
        users.append(user)
    return users


class BotProcess:
    """`imagine-bot run --config C` in a child process; stdout and stderr go to a log file."""

    def __init__(self, config: Path, fake: FakeDiscord, log: Path, *, module: str = "bot", env: dict | None = None):
        self.config = config
        self.fake = fake
        self.log = log
        self.module = module
        self.env = {**os.environ, "DISCORD_TOKEN": fake.token, "HF_HUB_OFFLINE": "1", **(env or {})}
        self.process: subprocess.Popen | None = None
        self._log_file: Any = None

    @property
    def data(self) -> Path:
        """The data folder of the config."""
        return self.config.parent / "data"

    @property
    def db(self) -> Path:
        """The SQLite file."""
        return self.data / "imagine.sqlite3"

    @property
    def images(self) -> Path:
        """The images folder."""
        return self.data / "images"

    async def start(self, timeout: float = 120) -> BotProcess:
        """Start it and wait until it has connected to the gateway and synced its commands."""
        since = len(self.fake.gateway.log)
        self._log_file = self.log.open("a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, "run", "--config", str(self.config)],
            cwd=ROOT,
            env=self.env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            await self.fake.wait_for_gateway("ready_sent", timeout=timeout, since=since)
            await self.fake.wait_until(
                lambda: self.fake.registered_commands(self.fake.guild.id) or None, timeout=timeout, what="commands"
            )
        except Exception:
            self.kill()
            raise AssertionError(f"the bot did not start:\n{self.output()[-3000:]}") from None
        except BaseException:
            self.kill()
            raise
        return self

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process is not None and self.process.poll() is None

    def rss(self) -> int:
        """Resident memory in bytes (Linux /proc)."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)[1]) * 1024

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind."""
        if self.alive:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
        self._close_log()

    async def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as a service manager stops it; returns the exit status."""
        assert self.process is not None
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        self._close_log()
        return self.process.returncode

    def output(self) -> str:
        """Everything it logged so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def query(db: Path, sql: str, parameters: tuple = ()) -> list[sqlite3.Row]:
    """Rows from the bot's SQLite file, read by a second connection as an operator would."""
    connection = sqlite3.connect(db, timeout=10)
    connection.row_factory = sqlite3.Row
    try:
        return connection.execute(sql, parameters).fetchall()
    except sqlite3.OperationalError:  # not created or migrated yet
        return []
    finally:
        connection.close()


def integrity(db: Path) -> str:
    """`PRAGMA integrity_check` of the file."""
    with sqlite3.connect(db) as connection:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]


def result_files(request: RecordedRequest) -> list[int]:
    """The job ids of the result images a request uploads."""
    return [int(m[1]) for f in request.files if (m := RESULT_FILE.match(f.filename))]


def is_progress_edit(request: RecordedRequest) -> bool:
    """A progress edit: a PATCH whose text has the progress bar."""
    return request.method == "PATCH" and "`[" in ((request.json or {}).get("content") or "")


def max_in_flight(requests: list[RecordedRequest]) -> int:
    """The most of these requests the fake was serving at one time."""
    events = sorted(
        [(r.received_at, 1) for r in requests] + [(r.answered_at or time.monotonic(), -1) for r in requests],
        key=lambda event: (event[0], event[1]),
    )
    most = current = 0
    for _, change in events:
        current += change
        most = max(most, current)
    return most


def result_messages(fake: FakeDiscord) -> dict[int, list[dict]]:
    """Live messages showing a result image, by job id."""
    found: dict[int, list[dict]] = {}
    for message in fake.store.messages.values():
        if message.deleted:
            continue
        for attachment in message.data["attachments"]:
            if match := RESULT_FILE.match(attachment["filename"]):
                found.setdefault(int(match[1]), []).append(message.data)
    return found


async def poll(probe: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Wait for `probe()` to return something truthy (for state outside the fake, such as the SQLite file)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := probe():
            return value
        await asyncio.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


def replying_to(fake: FakeDiscord, message: dict) -> Callable[[dict], bool]:
    """Matches the bot's replies to `message`."""

    def match(candidate: dict) -> bool:
        reference = candidate.get("message_reference") or {}
        return candidate["author"]["id"] == str(fake.bot_user.id) and reference.get("message_id") == message["id"]

    return match
