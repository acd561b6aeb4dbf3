"""Zoom Out and Pan buttons through the loopback Discord: the canvas grows, the picture stays in it, the new
border is painted with the same prompt and seed."""

from __future__ import annotations

import dataclasses

import numpy as np

from bot.imagine.views import OUTPAINT_ACTIONS, result_view
from storage.records import JobStatus
from tests.bot.conftest import button, custom_ids, decode, delivered_job, has_image


def picture(fake, message: dict) -> np.ndarray:
    attachment = next(a for a in message["attachments"] if "preview" not in a["filename"])
    return np.asarray(decode(fake, attachment).convert("RGB"), dtype=np.int16)


async def test_zoom_out_and_pan_grow_the_canvas_around_the_picture(start_bot) -> None:
    async with start_bot() as running:
        fake = running.fake
        handle = await fake.send_slash_command("imagine", {"prompt": "a red cube", "seed": 7})
        first = await handle.wait_for_original(has_image, timeout=60)
        ids = custom_ids(first)
        assert all(any(f"imagine:{action}:" in i for i in ids) for action in OUTPAINT_ACTIONS), ids
        source = picture(fake, first)

        zoom = await fake.send_button_click(int(first["id"]), button(first, "imagine:zoomdouble"))
        zoomed = await zoom.wait_for_original(has_image, timeout=60)
        grown = picture(fake, zoomed)
        assert grown.shape == (128, 128, 3)  # twice the size
        inner = grown[32 + 16 : 96 - 16, 32 + 16 : 96 - 16]  # the picture, inside the softened seam band
        assert np.abs(inner - source[16:-16, 16:-16]).max() == 0  # kept exactly
        assert np.abs(grown[:16] - grown[:16].mean()).max() > 0  # the border was painted, not left flat
        job = await delivered_job(running, int(button(zoomed, "imagine:reroll").split(":")[2]))
        assert job.status is JobStatus.DONE and job.params["mode"] == "inpaint" and job.params["seed"] == 7
        assert job.prompt == "a red cube" and job.params["keep_unmasked"] is True

        right = await fake.send_button_click(int(first["id"]), button(first, "imagine:panright"))
        panned = picture(fake, await right.wait_for_original(has_image, timeout=60))
        assert panned.shape == (64, 96, 3)
        assert np.abs(panned[:, : 64 - 16] - source[:, : 64 - 16]).max() == 0

        def outpaint_buttons(view) -> list[str]:
            return [i.custom_id for i in view.children if i.custom_id.split(":")[1] in OUTPAINT_ACTIONS]

        assert outpaint_buttons(running.bot._result_view(job))
        assert not outpaint_buttons(result_view(job, outpaint=False))  # a model that cannot inpaint
        assert not outpaint_buttons(running.bot._result_view(dataclasses.replace(job, model="gone")))
