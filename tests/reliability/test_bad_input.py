"""Bad input of every kind through the real bot and the fake Discord: a clear answer, nothing half-written.

Inputs arrive the way Discord delivers them: slash command options (already range-checked by Discord's
client, so out-of-range values come as server limits, sizes and flags), attachments behind CDN URLs,
and reply remixes. Valid-but-odd inputs (animated, CMYK, 16-bit, palette, EXIF-rotated) must just work.
"""

from __future__ import annotations

import io
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

import bot.answers
from storage.records import JobRecord, JobStatus
from tests.bot.conftest import Running, has_image, mask_png, png
from tests.fake_discord import StoredAttachment
from tests.reliability import samples
from tests.reliability.mentions import bot_writes, violations
from tests.reliability.process import replying_to
from tests.reliability.table import check

REFUSED = "refused with a clear message; nothing stored"
Verify = Callable[[JobRecord, dict], tuple[bool, str]]


def answered(message: dict) -> bool:
    return "⚠️" in message["content"] or has_image(message)


def shown(message: dict) -> str:
    text = message["content"].split("⚠️", 1)[-1].strip()
    return text if len(text) <= 140 else text[:139] + "…"


@dataclass
class Probe:
    """Sends one input at a time and checks the answer and what the bot stored."""

    running: Running

    @property
    def fake(self):
        return self.running.fake

    def files(self) -> set[str]:
        root = Path(self.running.config.storage.images_dir)
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}

    async def jobs(self) -> dict[int, JobRecord]:
        return {job.id: job for job in await self.running.store.recent_jobs(limit=10_000)}

    def attachment(self, filename: str, data: bytes, content_type: str | None = None) -> StoredAttachment:
        """An upload whose CDN URL exists before the command is sent (so faults can be aimed at it)."""
        return self.fake.store.add_attachment(self.fake.channel.id, filename, data, content_type, ephemeral=True)

    async def slash(self, options: dict, *, validate: bool = True, **attachments) -> dict:
        handle = await self.fake.send_slash_command("imagine", options, attachments=attachments, validate=validate)
        return await handle.wait_for_message(answered, timeout=60)

    async def reply(self, text: str, picture: bytes | None = None, mask: bytes | None = None) -> dict:
        fake = self.fake
        upload = await fake.post_user_message("a picture", attachments=[("pic.png", picture or png(), "image/png")])
        masks = [("mask.png", mask, "image/png")] if mask else None
        message = await fake.post_user_message(
            text, reply_to=int(upload["id"]), attachments=masks, user=fake.other_member
        )
        return await fake.wait_for_message(lambda m: replying_to(fake, message)(m) and answered(m), timeout=60)

    async def reply_to_embed(self, attachment: StoredAttachment) -> dict:
        """A reply remix of a picture shown in an embed (fetched through Discord's media proxy)."""
        fake = self.fake
        urls = attachment.payload(fake.base_url)
        image = {"url": urls["url"], "proxy_url": urls["proxy_url"]}
        embedded = await fake.post_user_message("look", embeds=[{"type": "rich", "image": image}])
        message = await fake.post_user_message("in the rain", reply_to=int(embedded["id"]), user=fake.other_member)
        return await fake.wait_for_message(lambda m: replying_to(fake, message)(m) and answered(m), timeout=60)

    async def refused(self, case: str, answer: Awaitable[dict], says: str, expected: str = REFUSED) -> None:
        jobs, files = await self.jobs(), self.files()
        message = await answer
        stored = {
            "jobs": len(await self.jobs()) - len(jobs),
            "files": len(self.files() - files),
        }
        nothing = not any(stored.values())
        check(
            "input",
            case,
            expected,
            f"“{shown(message)}”" + ("; nothing stored" if nothing else f"; stored {stored}"),
            "⚠️" in message["content"] and says in message["content"] and nothing and not has_image(message),
        )

    async def accepted(self, case: str, answer: Awaitable[dict], expected: str, verify: Verify) -> None:
        before = await self.jobs()
        message = await answer
        new = [job for job_id, job in (await self.jobs()).items() if job_id not in before]
        if len(new) != 1 or not has_image(message):
            check("input", case, expected, f"“{shown(message)}”, {len(new)} job(s)", False)
        job = new[0]
        ok, detail = verify(job, message)
        check("input", case, expected, f"done: {detail}", ok and job.status is JobStatus.DONE)

    def result(self, message: dict) -> Image.Image:
        attachment = next(a for a in message["attachments"] if a["filename"].startswith("imagine-"))
        return Image.open(io.BytesIO(self.fake.attachment_bytes(attachment)))

    async def no_one_pinged_but_requesters(self) -> None:
        owners = {
            int(job.delivered_where.split(":")[1]): job.user_id
            for job in (await self.jobs()).values()
            if (job.delivered_where or "").startswith("channel:")
        }
        writes = bot_writes(self.fake, owners.get)
        bad = violations(writes)
        assert writes and not bad, bad


def controls(text: str) -> list[str]:
    return [c for c in text if (unicodedata.category(c) == "Cc" and not c.isspace()) or "\u202a" <= c <= "\u202e"]


async def test_bad_prompts(start_bot) -> None:
    async with start_bot() as running:
        probe, fake = Probe(running), running.fake
        await probe.refused(
            "prompt: empty (a reply remix that is only flags)",
            probe.reply("--seed 5"),
            "The prompt is empty",
        )
        await probe.refused("prompt: whitespace only", probe.slash({"prompt": "  \t  "}), "The prompt is empty")
        await probe.refused(
            "prompt: 10,000 characters (past Discord's own 2,000 check)",
            probe.slash({"prompt": "x" * 10_000}, validate=False),
            "10000 characters long; the limit is 2000",
        )

        def no_controls(job: JobRecord, message: dict) -> tuple[bool, str]:
            ok = job.prompt == "a cat[31m in red" and not controls(message["content"])
            return ok, f"stored and shown as {job.prompt!r}"

        await probe.accepted(
            "prompt: control characters (NUL, ESC, BEL)",
            probe.slash({"prompt": "a cat\x00\x1b[31m in red\x07"}),
            "job succeeds; control characters taken out",
            no_controls,
        )

        def no_bidi(job: JobRecord, message: dict) -> tuple[bool, str]:
            ok = "\u202e" not in job.prompt + message["content"] and "gnp.exe" in message["content"]
            return ok, f"override removed, shown as {job.prompt!r}"

        await probe.accepted(
            "prompt: bidi override (U+202E)",
            probe.slash({"prompt": "a dog \u202egnp.exe"}),
            "job succeeds; bidi controls taken out",
            no_bidi,
        )
        emoji = "🐱\u200d👤 ninja cat 🎨🇯🇵"

        def keeps_emoji(job: JobRecord, message: dict) -> tuple[bool, str]:
            parameters = probe.result(message).info.get("parameters", "")
            return emoji in message["content"] and parameters.startswith(emoji), "emoji kept in message and PNG"

        await probe.accepted(
            "prompt: emoji with joiners and flags", probe.slash({"prompt": emoji}), "job succeeds", keeps_emoji
        )
        markdown = "**bold** __under__ ~~gone~~ `code` ||spoiler|| [click](https://example.com)"

        def escaped(job: JobRecord, message: dict) -> tuple[bool, str]:
            content = message["content"]
            ok = "\\*\\*bold\\*\\*" in content and "\\|\\|spoiler\\|\\|" in content and "\\[click]" in content
            return ok, "markdown escaped, shown literally"

        await probe.accepted(
            "prompt: markdown and a masked link",
            probe.slash({"prompt": markdown}),
            "job succeeds; shown as text",
            escaped,
        )
        role = fake.guild.roles[1].id
        mentions = f"@everyone @here <@{fake.other_member.id}> <@&{role}> hello"
        since = len(fake.requests)

        def never_pings(job: JobRecord, message: dict) -> tuple[bool, str]:
            writes = bot_writes(fake, lambda _: None, since)
            pinged = set().union(*(w.notified for w in writes))
            ok = "@\u200beveryone" in message["content"] and not pinged and not violations(writes)
            return ok, f"escaped; {len(writes)} messages sent, pinging {pinged or 'nobody'}"

        await probe.accepted(
            "prompt: @everyone, @here, user and role mentions",
            probe.slash({"prompt": mentions}),
            "job succeeds; never pings",
            never_pings,
        )
        await probe.no_one_pinged_but_requesters()


async def test_bad_attachments(start_bot, monkeypatch) -> None:
    monkeypatch.setattr(bot.answers, "DOWNLOAD_TIMEOUT", 1.0)
    async with start_bot() as running:
        probe, fake = Probe(running), running.fake
        refusals = [
            (
                "not an image (a text file)",
                ("notes.txt", b"just some words", "text/plain"),
                "not a picture we can read",
            ),
            ("empty file (0 bytes)", ("empty.png", b"", "image/png"), "empty (0 bytes)"),
            ("truncated PNG", ("cut.png", samples.noise_png()[:3000], "image/png"), "damaged or cut off"),
            (
                "decompression bomb (30000x30000 in 1 KB)",
                ("bomb.png", samples.png_header(30000, 30000)),
                "too many pixels",
            ),
            (
                "enormous dimensions (8000x6000)",
                ("huge.png", samples.png_header(8000, 6000)),
                "the limit is 40 megapixels",
            ),
            ("1x1 pixel", ("dot.png", png((1, 1))), "at least 32 pixels"),
            ("10000x16 sliver", ("sliver.png", samples.png_header(10000, 16)), "at least 32 pixels"),
            ("SVG drawing", ("drawing.svg", samples.SVG, "image/svg+xml"), "SVG drawing, which is not supported"),
            ("HEIC photo", ("photo.heic", samples.HEIC, "image/heic"), "HEIC photo, which is not supported"),
            ("PDF named .png", ("doc.png", samples.PDF, "image/png"), "PDF document, which is not supported"),
        ]
        for case, upload, says in refusals:
            await probe.refused(f"image: {case}", probe.slash({"prompt": "bad image"}, image=upload), says)

        big = probe.attachment("big.png", png() + bytes(26 * samples.MiB))
        await probe.refused(
            "image: larger than the upload limit (26 MB)",
            probe.slash({"prompt": "big"}, image=big),
            "26.0 MB; the limit is 25 MB",
        )
        check(
            "input",
            "image: larger than the upload limit — download",
            "refused before downloading",
            "not downloaded" if not [r for r in fake.requests if str(big.id) in r.path] else "downloaded",
            not [r for r in fake.requests if str(big.id) in r.path],
        )
        gone = probe.attachment("gone.png", png())
        fake.inject("GET", rf"/attachments/\d+/{gone.id}/", 404, times=None)
        await probe.refused("image: CDN URL answers 404", probe.slash({"prompt": "gone"}, image=gone), "(404)")
        stuck = probe.attachment("stuck.png", png())
        fake.inject("GET", rf"/attachments/\d+/{stuck.id}/", None, times=None, delay=60)
        await probe.refused(
            "image: CDN URL hangs (download timeout 1 s in this test, 30 s in production)",
            probe.slash({"prompt": "stuck"}, image=stuck),
            "took over 1 s",
        )
        await probe.refused("embed picture (reply remix): media proxy answers 404", probe.reply_to_embed(gone), "(404)")
        await probe.refused(
            "embed picture (reply remix): media proxy hangs", probe.reply_to_embed(stuck), "took over 1 s"
        )

        def size_is(width: int, height: int) -> Verify:
            def verify(job: JobRecord, message: dict) -> tuple[bool, str]:
                size = probe.result(message).size
                return job.mode.value == "img2img" and size == (width, height), f"img2img, result {size[0]}x{size[1]}"

            return verify

        def first_frame(job: JobRecord, message: dict) -> tuple[bool, str]:
            with Image.open(Path(running.config.storage.images_dir) / job.init_path) as init:
                pixel = init.convert("RGB").getpixel((32, 32))
            ok, detail = size_is(64, 64)(job, message)
            return ok and pixel[0] > 150 > pixel[1], f"{detail}, started from the first (red) frame {pixel}"

        conversions = [
            (
                "animated GIF (red, green, blue frames)",
                ("anim.gif", samples.animated_gif()),
                "first frame used",
                first_frame,
            ),
            ("CMYK JPEG", ("print.jpg", samples.cmyk_jpeg()), "converted to RGB", size_is(64, 64)),
            ("16-bit greyscale PNG", ("deep.png", samples.png_16bit()), "converted to RGB", size_is(64, 64)),
            (
                "palette PNG with transparency",
                ("pal.png", samples.palette_with_transparency()),
                "converted",
                size_is(64, 64),
            ),
            (
                "EXIF-rotated JPEG (96x64 stored, shown 64x96)",
                ("phone.jpg", samples.exif_rotated_jpeg()),
                "turned upright",
                size_is(64, 80),
            ),
            ("AVIF (supported by this Pillow)", ("pic.avif", samples.avif()), "decoded", size_is(64, 64)),
        ]
        for case, upload, how, verify in conversions:
            await probe.accepted(
                f"image: {case}", probe.slash({"prompt": "odd image"}, image=upload), f"job succeeds; {how}", verify
            )
        await probe.no_one_pinged_but_requesters()


async def test_bad_masks(start_bot) -> None:
    async with start_bot() as running:
        probe = Probe(running)
        image = ("in.png", png(), "image/png")
        refusals = [
            (
                "mask: wrong shape (64x32 for a 64x64 image)",
                samples.grey_mask((64, 32), 255),
                "same shape as the image",
            ),
            ("mask: colour instead of black and white", samples.colour_mask(), "mask is in colour"),
            ("mask: all black", samples.grey_mask((64, 64), 0), "all black"),
            ("mask: all white", samples.grey_mask((64, 64), 255), "all white"),
        ]
        for case, mask, says in refusals:
            answer = probe.slash({"prompt": "masked"}, image=image, mask=("m.png", mask, "image/png"))
            await probe.refused(case, answer, says)
        await probe.refused(
            "mask without an image",
            probe.slash({"prompt": "masked"}, mask=("m.png", mask_png(), "image/png")),
            "A mask needs an image",
        )
        await probe.refused(
            "mask (reply remix): all black", probe.reply("a door", mask=samples.grey_mask((64, 64), 0)), "all black"
        )

        def inpainted(job: JobRecord, message: dict) -> tuple[bool, str]:
            return job.mode.value == "inpaint", f"{job.mode.value}, mask scaled to the image"

        await probe.accepted(
            "mask: same shape, half the resolution (32x32 for 64x64)",
            probe.slash({"prompt": "a door"}, image=image, mask=("m.png", mask_png((32, 32)), "image/png")),
            "job succeeds",
            inpainted,
        )
        await probe.no_one_pinged_but_requesters()


async def test_options_out_of_range(start_bot) -> None:
    async with start_bot(max_steps=10, max_count=2) as running:
        probe = Probe(running)
        slash_refusals = [
            ("steps 20 on a server whose limit is 10", {"steps": 20}, "20 steps is over this server's limit of 10"),
            ("count 4 on a server whose limit is 2", {"count": 4}, "4 images is over this server's limit of 2"),
            (
                "model that does not exist (free text in autocomplete)",
                {"model": "sdxl-ultra"},
                "no model called 'sdxl-ultra'",
            ),
            ("sampler that does not exist", {"sampler": "Warp 9"}, "Warp 9"),
        ]
        for case, options, says in slash_refusals:
            await probe.refused(f"option: {case}", probe.slash({"prompt": "options", **options}), says)
        flag_refusals = [
            (
                "--size 2048x2048 (over the server's 1 megapixel)",
                "--size 2048x2048",
                "over this server's limit of 1,048,576",
            ),
            ("--size 4096x4096", "--size 4096x4096", "between 64 and 2048 pixels, not 4096"),
            ("--size 100x100 (not a multiple of 8)", "--size 100x100", "multiple of 8, not 100"),
            ("--ar 10:1", "--ar 10:1", "aspect ratios up to 4:1"),
            ("--steps 500", "--steps 500", "between 1 and 150, not 500"),
            ("--seed -1", "--seed -1", "between 0 and 4294967295, not -1"),
            ("--strength 1.5", "--strength 1.5", "at most 1, not 1.5"),
            ("--guidance 99", "--guidance 99", "between 0 and 30, not 99"),
            ("--count 9", "--count 9", "1 to 4 images at once, not 9"),
            ("--steps ten", "--steps ten", "needs a whole number, not `ten`"),
        ]
        for case, flags, says in flag_refusals:
            await probe.refused(f"flag: {case}", probe.reply(f"a boat {flags}"), says)
        await probe.no_one_pinged_but_requesters()
