"""Start-up problems, tried as a new user would with `imagine-bot run --config C` in a real process.

What stops the start ends in one line saying what failed and where, and a non-zero exit; a model other
than the default that cannot be loaded is reported, hidden and refused while the bot serves the rest.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fake_discord import FakeDiscord
from tests.reliability.process import ROOT, BotProcess, query, write_config

EPHEMERAL = 64
NOT_A_DATABASE = b"these are my notes, not a database\n"


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def run_to_exit(config: Path, token: str) -> subprocess.CompletedProcess:
    """`imagine-bot run --config C` until it exits by itself (the fake keeps serving meanwhile)."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bot", "run", "--config", str(config)],
        cwd=ROOT,
        env={**os.environ, "DISCORD_TOKEN": token, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=180,
    )


def unresolvable_host(folder: Path, fake: FakeDiscord, model: Path) -> tuple[Path, list[str]]:
    config = write_config(folder, fake, model, api_base="https://discord.invalid/api/v10")
    return config, ["cannot reach Discord at https://discord.invalid/api/v10", "[discord] api_base", "discord.invalid"]


def closed_local_port(folder: Path, fake: FakeDiscord, model: Path) -> tuple[Path, list[str]]:
    port = closed_port()
    config = write_config(folder, fake, model, api_base=f"http://127.0.0.1:{port}/api/v10")
    return config, [f"cannot reach Discord at http://127.0.0.1:{port}/api/v10", "[discord] api_base"]


def storage_not_sqlite(folder: Path, fake: FakeDiscord, model: Path) -> tuple[Path, list[str]]:
    (folder / "data").mkdir()
    (folder / "data" / "imagine.sqlite3").write_bytes(NOT_A_DATABASE)
    config = write_config(folder, fake, model)
    return config, [f"{folder / 'data' / 'imagine.sqlite3'} ([storage] path) is not a SQLite database"]


def default_model_missing(folder: Path, fake: FakeDiscord, model: Path) -> tuple[Path, list[str]]:
    missing = folder / "no-such-model"
    config = write_config(folder, fake, missing)
    return config, [f"Model 'tiny' could not be loaded from '{missing}'", "no such directory", "default model"]


Setup = Callable[[Path, FakeDiscord, Path], tuple[Path, list[str]]]


@pytest.mark.parametrize(
    "setup", [unresolvable_host, closed_local_port, storage_not_sqlite, default_model_missing], ids=lambda f: f.__name__
)
async def test_a_fatal_problem_ends_in_one_line_and_a_failing_exit(
    setup: Setup, fake_discord: FakeDiscord, tiny_sd_dir: Path, tmp_path: Path
) -> None:
    config, expected = setup(tmp_path, fake_discord, tiny_sd_dir)
    result = await run_to_exit(config, fake_discord.token)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    said = [line for line in lines if line.startswith("imagine-bot:")]
    assert said == lines[-1:], result.stderr  # exactly one line of ours, the last one
    for text in expected:
        assert text in said[0], said[0]
    if setup is storage_not_sqlite:
        assert (tmp_path / "data" / "imagine.sqlite3").read_bytes() == NOT_A_DATABASE  # left as it was


async def test_a_second_model_that_cannot_be_loaded_is_reported_hidden_and_refused(
    fake_discord: FakeDiscord, tiny_sd_dir: Path, tmp_path: Path
) -> None:
    fake = fake_discord
    ghost = tmp_path / "ghost-model"
    config = write_config(tmp_path, fake, tiny_sd_dir, more_models={"tiny-b": tiny_sd_dir, "ghost": ghost})
    bot = await BotProcess(config, fake, tmp_path / "bot.log").start()
    try:
        reported = [line for line in bot.output().splitlines() if "Model 'ghost' could not be loaded" in line]
        assert len(reported) == 1 and str(ghost) in reported[0] and "hidden from /imagine" in reported[0]

        typing = await fake.send_autocomplete("imagine", {"prompt": "x", "model": ""}, focused="model")
        assert [c["value"] for c in await typing.wait_for_choices()] == ["tiny", "tiny-b"]

        handle = await fake.send_slash_command("imagine", {"prompt": "a cat", "model": "ghost"})
        refused = (await handle.wait_for_callback())["data"]
        assert refused["flags"] & EPHEMERAL
        assert "The model 'ghost' is not available right now" in refused["content"]
        assert "Choose one of: tiny, tiny-b" in refused["content"]
        assert query(bot.db, "SELECT id FROM jobs") == []  # refused before anything was stored
    finally:
        status = await bot.stop()
    assert status == 0, bot.output()[-3000:]
    assert "Traceback" not in bot.output()
