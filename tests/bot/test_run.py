"""`imagine-bot run --config C` as a real process against the loopback fake Discord."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.bot.conftest import has_image
from tests.reliability.process import write_config

ROOT = Path(__file__).resolve().parents[2]


async def test_run_registers_imagine_and_delivers_a_png(fake_discord, tiny_sd_dir: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, fake_discord, tiny_sd_dir)
    env = {**os.environ, "DISCORD_TOKEN": fake_discord.token, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "run", "--config", str(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        commands = await fake_discord.wait_until(
            lambda: fake_discord.registered_commands(fake_discord.guild.id) or None, timeout=90, what="commands"
        )
        assert "imagine" in {c["name"] for c in commands}
        await fake_discord.wait_for_gateway("ready_sent", timeout=30)
        handle = await fake_discord.send_slash_command("imagine", {"prompt": "a red cube", "seed": 7})
        final = await handle.wait_for_original(has_image, timeout=90)
        image = Image.open(io.BytesIO(fake_discord.attachment_bytes(final["attachments"][0])))
        assert image.info["parameters"].startswith("a red cube\nSteps: 4")
        assert (tmp_path / "data" / "imagine.sqlite3").is_file()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = await asyncio.to_thread(process.communicate, timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert process.returncode == 0, output
    assert fake_discord.token not in output  # the token never reaches the logs
