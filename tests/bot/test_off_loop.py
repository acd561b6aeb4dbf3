"""The event loop never decodes, resizes or encodes images: the bot hands that to worker threads."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageFile

from tests.bot.conftest import button, has_image, mask_png, png

BOT_PACKAGE = Path(__file__).resolve().parents[2] / "bot"
# What touches pixels in PIL: opening, decoding (load), converting, resizing, encoding (save).
PIXEL_WORK = ((Image, "open"), (ImageFile.ImageFile, "load"), (Image.Image, "convert"), (Image.Image, "resize"))
PIXEL_WORK += ((Image.Image, "save"),)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _bot_caller() -> str | None:
    """The innermost frame of the bot's own code on this thread's stack, as file:line."""
    frame = sys._getframe(2)
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path.is_relative_to(BOT_PACKAGE):
            return f"{path.relative_to(BOT_PACKAGE.parent)}:{frame.f_lineno}"
        frame = frame.f_back
    return None


@pytest.fixture
def pixels_on_loop(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every PIL call the bot's code makes on the event loop's thread, as 'function from file:line'."""
    found: list[str] = []

    def watch(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def watched(*args: Any, **kwargs: Any) -> Any:
            if _on_event_loop() and (caller := _bot_caller()):
                found.append(f"{name} from {caller}")
            return original(*args, **kwargs)

        return watched

    for owner, name in PIXEL_WORK:
        monkeypatch.setattr(owner, name, watch(name, getattr(owner, name)))
    return found


async def test_imagine_with_pictures_buttons_and_previews_keep_pixels_off_the_loop(
    start_bot, pixels_on_loop: list[str]
) -> None:
    async with start_bot() as running:
        fake = running.fake
        handle = await fake.send_slash_command(
            "imagine",
            {"prompt": "a door", "steps": 6},  # previews every 2 steps: encoded while the job runs
            attachments={
                "image": ("in.png", png((96, 64)), "image/png"),
                "mask": ("m.png", mask_png((96, 64)), "image/png"),
            },
        )
        result = await handle.wait_for_original(has_image, timeout=60)
        for action in ("imagine:vary", "imagine:upscale", "imagine:info"):
            click = await fake.send_button_click(int(result["id"]), button(result, action))
            await click.wait_for_callback()
            if action != "imagine:info":
                await click.wait_for_original(has_image, timeout=60)
    assert pixels_on_loop == []
