"""A1111 prompt syntax through the loopback Discord: /imagine and remix replies (CLI: test_cli_prompt_syntax.py).

`(word:1.3)` changes the picture against the plain word for the same seed; `(word:1.0)` gives the plain
word's pixels exactly, as in A1111; unbalanced brackets are text, never a lost job.
"""

from __future__ import annotations

import numpy as np

from tests.bot.conftest import decode, has_image, png
from tests.bot.test_remix import answer_to


def pixels(fake, message: dict) -> np.ndarray:
    attachment = next(a for a in message["attachments"] if "preview" not in a["filename"])
    return np.asarray(decode(fake, attachment).convert("RGB"), dtype=np.int16)


async def imagine(fake, prompt: str) -> np.ndarray:
    handle = await fake.send_slash_command("imagine", {"prompt": prompt, "seed": 7})
    return pixels(fake, await handle.wait_for_original(has_image, timeout=60))


async def test_imagine_reads_a1111_weights(start_bot) -> None:
    async with start_bot() as running:
        fake = running.fake
        plain = await imagine(fake, "a red cube")
        assert np.abs(await imagine(fake, "a (red:1.6) cube") - plain).max() > 0
        assert np.array_equal(await imagine(fake, "a (red:1.0) cube"), plain)
        await imagine(fake, "a (red cube")  # unbalanced: read as text, delivered like any other
        jobs = await running.store.recent_jobs()
        assert [job.prompt for job in jobs][::-1] == [
            "a red cube",
            "a (red:1.6) cube",
            "a (red:1.0) cube",
            "a (red cube",
        ]


async def test_remix_replies_read_a1111_weights(start_bot) -> None:
    async with start_bot() as running:
        fake = running.fake
        upload = await fake.post_user_message("my holiday", attachments=[("beach.png", png(), "image/png")])
        results = []
        for text in ("make it winter --seed 3", "make it (winter:1.8) --seed 3", "make it (winter:1.0) --seed 3"):
            reply = await fake.post_user_message(text, reply_to=int(upload["id"]))
            final = await fake.wait_for_message(lambda m, r=reply: answer_to(fake, r)(m) and has_image(m), timeout=60)
            results.append(pixels(fake, final))
        assert np.abs(results[1] - results[0]).max() > 0
        assert np.array_equal(results[2], results[0])
