"""What the bot's messages say and show: text, progress bars, grids, upload-sized files."""

from __future__ import annotations

import io
import math

import discord
from PIL import Image

from generation.request import without_control_chars
from storage.records import JobRecord

BAR_CELLS = 12
MAX_PROMPT_SHOWN = 300
NO_MENTIONS = discord.AllowedMentions.none()  # user text is echoed back: it must never ping anyone
SOMETHING_WENT_WRONG = "Something went wrong on our side; it has been logged. Please try again."


def safe_text(text: str, limit: int = MAX_PROMPT_SHOWN) -> str:
    """User text made inert: no markdown, no mentions, no control or bidi characters, bounded length."""
    text = " ".join(without_control_chars(text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


def headline(job: JobRecord) -> str:
    """The first line of every message about a job: the prompt."""
    return f"**{safe_text(job.prompt)}**"


def describe_eta(seconds: float | None) -> str:
    """'about 40 s' / 'about 3 min', or nothing before throughput is known."""
    if seconds is None:
        return ""
    if seconds < 90:
        return f" · about {max(1, round(seconds))} s"
    return f" · about {round(seconds / 60)} min"


def queued_text(job: JobRecord, position: int, eta_seconds: float | None) -> str:
    """Shown while the job waits."""
    place = "next in line" if position == 1 else f"#{position} in line"
    return f"{headline(job)}\n⏳ Queued — {place}{describe_eta(eta_seconds)}"


def progress_bar(step: int, total: int) -> str:
    """A fixed-width bar such as `[██████░░░░░░] 50%`."""
    fraction = 0.0 if total <= 0 else min(1.0, step / total)
    filled = round(fraction * BAR_CELLS)
    return f"`[{'█' * filled}{'░' * (BAR_CELLS - filled)}] {round(fraction * 100):>3}%`"


def progress_text(job: JobRecord, step: int, total: int) -> str:
    """Shown while the job runs."""
    return f"{headline(job)}\n🎨 {progress_bar(step, total)} step {step}/{total}"


def result_text(job: JobRecord, seeds: list[int], mention: bool) -> str:
    """Shown with the finished images."""
    params = job.params
    who = f"<@{job.user_id}> · " if mention else ""
    if upscale := params.get("upscale"):  # the upscaler's name, the factor and the picture's new size
        scale = upscale["scale"]
        size = f"{upscale['width'] * scale}x{upscale['height'] * scale}"
        return f"{headline(job)}\n{who}upscaled {scale}x to {size} · {safe_text(job.model, 60)}"
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}–{seeds[-1]}"
    mode = "" if job.mode.value == "txt2img" else f" · {job.mode.value} (strength {params['strength']:g})"
    return (
        f"{headline(job)}{translated_text(job)}\n{who}{seed_text} · {safe_text(job.model, 60)} · "
        f"{params['width']}x{params['height']} · {params['steps']} steps{mode}"
    )


def translated_text(job: JobRecord) -> str:
    """Lines saying what the model read instead of the typed prompt ("translated from French: …"), if it did."""
    lines = []
    if job.translated_prompt is not None:
        lines.append(f"translated from {job.prompt_language}: {safe_text(job.translated_prompt)}")
    if job.translated_negative is not None:
        source = "" if job.translated_prompt is not None else f" from {job.prompt_language}"
        lines.append(f"negative prompt translated{source}: {safe_text(job.translated_negative, 200)}")
    return "".join(f"\n{line}" for line in lines)


def failed_text(job: JobRecord, error: str, mention: bool) -> str:
    """Shown when the job failed."""
    who = f"<@{job.user_id}> " if mention else ""
    return f"{headline(job)}\n⚠️ {who}{error}"


def storage_full_text(job: JobRecord) -> str:
    """Shown while the job waits for room on the bot's disk to store its images."""
    return (
        f"{headline(job)}\n💾 The bot's storage is full, so your images could not be saved yet. "
        "Your job is kept and will continue once its operator frees some space."
    )


def cancelled_text(job: JobRecord) -> str:
    """Shown when the job was cancelled."""
    return f"{headline(job)}\n🚫 Cancelled."


def grid(images: list[Image.Image]) -> Image.Image:
    """Tile images in a near-square grid (2x2 for four), left to right, top to bottom."""
    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    width, height = images[0].size
    sheet = Image.new("RGB", (columns * width, rows * height), (0, 0, 0))
    for i, image in enumerate(images):
        sheet.paste(image, ((i % columns) * width, (i // columns) * height))
    return sheet


def fit_upload(png: bytes, limit: int) -> tuple[bytes, str]:
    """The PNG and "png" if it fits Discord's upload limit, else a JPEG shrunk until it fits and "jpg".

    Decodes and encodes: call it from a worker thread, not the event loop.
    """
    if len(png) <= limit:
        return png, "png"
    with Image.open(io.BytesIO(png)) as opened:
        image = opened.convert("RGB")
    for scale in (1.0, 0.75, 0.5, 0.35, 0.25):
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        buffer = io.BytesIO()
        image.resize(size, Image.Resampling.LANCZOS).save(buffer, format="JPEG", quality=88)
        if buffer.tell() <= limit:
            return buffer.getvalue(), "jpg"
    raise ValueError(f"cannot fit an image under {limit} bytes")
