"""Every button on a result, clicked through the fake Discord; jobs go to whoever clicked."""

from __future__ import annotations

from storage.records import JobStatus
from tests.bot.conftest import button, decode, has_image, slow_steps

EPHEMERAL = 64


async def make_result(running, **options) -> dict:
    handle = await running.fake.send_slash_command(
        "imagine", {"prompt": "a lighthouse", "seed": 5} | options, user=running.fake.member
    )
    return await handle.wait_for_original(has_image, timeout=60)


def job_of(message: dict) -> int:
    return int(button(message, "imagine:info").split(":")[2])


async def test_reroll_vary_upscale_make_new_jobs_for_the_clicker(start_bot) -> None:
    async with start_bot() as running:
        fake, store = running.fake, running.store
        result = await make_result(running)
        source = job_of(result)
        shown = [
            (c.get("emoji") or {}).get("name", "") + (c.get("label") or "")
            for c in result["components"][0]["components"]
        ]
        # No upscaler configured: no Upscale (Subtle), and Creative is the img2img pass at twice the size alone.
        assert shown == ["✨Upscale (Creative)", "Vary", "🔄Reroll", "✏️Edit"]
        for action, check in (
            ("imagine:reroll", lambda job, image: job.mode.value == "txt2img" and job.params["seed"] != 5),
            ("imagine:vary", lambda job, image: job.mode.value == "img2img" and job.params["strength"] == 0.35),
            (  # Upscale (Creative)
                "imagine:upscale",
                lambda job, image: image.size == (128, 128) and job.params["strength"] == 0.3 and job.model == "tiny",
            ),
        ):
            click = await fake.send_button_click(int(result["id"]), button(result, action), user=fake.other_member)
            assert "Queued" in (await click.wait_for_callback())["data"]["content"]
            new = await click.wait_for_original(has_image, timeout=60)
            job = await store.get_job(job_of(new))
            assert job.user_id == fake.other_member.id and job.source_job_id == source, action
            assert check(job, decode(fake, new["attachments"][0])), action


async def test_edit_opens_a_prefilled_modal_and_queues_the_new_prompt(start_bot) -> None:
    async with start_bot() as running:
        fake = running.fake
        result = await make_result(running, negative="fog")
        click = await fake.send_button_click(int(result["id"]), button(result, "imagine:edit"))
        modal = await click.wait_for_modal()
        defaults = [c["components"][0].get("value") for c in modal["components"]]
        assert defaults == ["a lighthouse", "fog"]
        submit = await fake.send_modal_submit(
            modal["custom_id"], {"prompt": "a lighthouse at night", "negative": "fog"}
        )
        new = await submit.wait_for_original(has_image, timeout=60)
        assert "**a lighthouse at night**" in new["content"]


async def test_info_is_ephemeral_with_parameters(start_bot) -> None:
    async with start_bot() as running:
        fake = running.fake
        result = await make_result(running)
        click = await fake.send_button_click(int(result["id"]), button(result, "imagine:info"), user=fake.other_member)
        data = (await click.wait_for_callback())["data"]
        assert data["flags"] & EPHEMERAL
        assert "a lighthouse" in data["content"] and "Seed: 5" in data["content"] and "Steps: 4" in data["content"]


async def test_delete_only_by_requester_or_moderator(start_bot) -> None:
    async with start_bot() as running:
        fake, store = running.fake, running.store
        for deleter in (fake.member, fake.moderator):
            result = await make_result(running)
            job_id = job_of(result)
            refused = await fake.send_button_click(
                int(result["id"]), button(result, "imagine:delete"), user=fake.other_member
            )
            data = (await refused.wait_for_callback())["data"]
            assert data["flags"] & EPHEMERAL and "Only the person who made this image or a moderator" in data["content"]
            assert await store.images_for_job(job_id)
            click = await fake.send_button_click(int(result["id"]), button(result, "imagine:delete"), user=deleter)
            assert "Deleted 1 image" in (await click.wait_for_callback())["data"]["content"]
            await fake.wait_until(lambda: fake.message(int(result["id"])) is None)  # noqa: B023
            assert await store.images_for_job(job_id) == []


async def test_cancel_while_queued_and_while_running(start_bot) -> None:
    async with start_bot() as running:
        fake, store = running.fake, running.store
        with slow_steps(running.worker.engine, 0.1):  # 60 steps: about 6 s, so both are still active
            slow = await fake.send_slash_command("imagine", {"prompt": "slow", "steps": 60})
            waiting = await fake.send_slash_command("imagine", {"prompt": "waiting"}, user=fake.other_member)
            for handle, user in ((waiting, fake.other_member), (slow, fake.member)):
                queued = (await handle.wait_for_callback())["data"]
                message_id = handle.original_message_id
                stranger = fake.member if user is fake.other_member else fake.other_member
                refused = await fake.send_button_click(message_id, button(queued, "imagine:cancel"), user=stranger)
                assert "Only the person who asked" in (await refused.wait_for_callback())["data"]["content"]
                click = await fake.send_button_click(message_id, button(queued, "imagine:cancel"), user=user)
                assert "Cancelled job" in (await click.wait_for_callback())["data"]["content"]
                final = await handle.wait_for_original(lambda m: "Cancelled" in m["content"], timeout=30)
                assert not has_image(final)
                job_id = int(button(queued, "imagine:cancel").split(":")[2])
                assert (await store.get_job(job_id)).status is JobStatus.CANCELLED
