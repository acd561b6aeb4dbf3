"""Errors that are not the user's doing, in buttons and the Edit modal: answered only to them, and logged."""

from __future__ import annotations

import logging

import pytest

from bot.render import SOMETHING_WENT_WRONG
from tests.bot.conftest import button, has_image, png
from tests.bot.test_buttons import job_of, make_result

EPHEMERAL = 64


def traceback_logged(caplog: pytest.LogCaptureFixture, error: str) -> bool:
    return any(r.levelno >= logging.ERROR and r.exc_info and r.exc_info[0].__name__ == error for r in caplog.records)


async def test_a_button_that_fails_unexpectedly_answers_the_clicker_and_logs(start_bot, caplog) -> None:
    async with start_bot() as running:
        fake, store = running.fake, running.store
        result = await make_result(running)
        (record,) = await store.images_for_job(job_of(result))
        store.image_path(record).unlink()  # the file went missing behind the store's back: not a refusal
        click = await fake.send_button_click(int(result["id"]), button(result, "imagine:vary"), user=fake.other_member)
        answer = (await click.wait_for_callback())["data"]
        assert answer["flags"] & EPHEMERAL and SOMETHING_WENT_WRONG in answer["content"]
        assert traceback_logged(caplog, "FileNotFoundError")
        assert "Traceback" in caplog.text and "button vary on job" in caplog.text


async def test_an_edit_modal_that_fails_unexpectedly_answers_the_submitter_and_logs(start_bot, caplog) -> None:
    async with start_bot() as running:
        fake, store = running.fake, running.store
        handle = await fake.send_slash_command(
            "imagine", {"prompt": "winter"}, attachments={"image": ("in.png", png(), "image/png")}
        )
        result = await handle.wait_for_original(has_image, timeout=60)
        job = await store.get_job(job_of(result))
        (store.images_dir / job.init_path).unlink()  # the stored start picture is gone
        click = await fake.send_button_click(int(result["id"]), button(result, "imagine:edit"))
        modal = await click.wait_for_modal()
        submit = await fake.send_modal_submit(modal["custom_id"], {"prompt": "summer", "negative": ""})
        answer = (await submit.wait_for_callback())["data"]
        assert answer["flags"] & EPHEMERAL and SOMETHING_WENT_WRONG in answer["content"]
        assert traceback_logged(caplog, "FileNotFoundError")
        assert "Traceback" in caplog.text and f"Edit modal of job {job.id}" in caplog.text
