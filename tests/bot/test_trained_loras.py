"""Members' trained LoRAs through the bot: by plain name for whom they belong to, refused to others at the gate
(typed, by button, by remix) until shared, in /imagine's picker for their owner; and which name wins a clash."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from PIL import Image

from bot.config import Config
from bot.loras import check_lora_access, usable_loras
from bot.moderation.policy import NotAllowed
from bot.runner import bot_parts
from bot.services import Services
from generation.catalog import Catalog, trained_name
from generation.engine import Engine
from generation.metadata import read_parameters
from generation.specs import LoraSpec, ModelSpec
from generation.tiny.lora import write_tiny_lora
from jobs.events import EventBus
from jobs.limits import Limits
from jobs.queue import JobQueue
from jobs.training import trained_spec
from storage.records import LoraRecord
from storage.store import Store
from tests.bot.conftest import Running, button, delivered_job, has_image, make_config, png
from tests.bot.test_remix import answer_to, job_id_of
from tests.fake_discord import FakeDiscord, running_client
from tests.fake_discord.models import FakeUser
from tests.support.requests import txt2img

EPHEMERAL = 64
GUILD = 5


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real LoRA for the tiny SD model, as a training would leave it."""
    return write_tiny_lora(tmp_path_factory.mktemp("trained") / "ball.safetensors", "sd", 4).read_bytes()


async def add_lora(
    store: Store,
    catalog: Catalog,
    data: bytes,
    *,
    owner: int,
    guild: int | None,
    name: str = "Red ball",
    kind: str = "sd",
    shared: bool = False,
) -> LoraRecord:
    """A finished training's LoRA in the library, accepted by the catalog as the bot does when one finishes."""
    training = await store.create_training(
        user_id=owner,
        guild_id=guild,
        name=name,
        trigger_token="sks",
        class_word="ball",
        base_model="tiny",
        kind=kind,
        settings={},
        total_steps=1,
        photos=[Image.new("RGB", (64, 64), (200, 40, 40))],
    )
    assert await store.start_training(training.id)
    store.lora_file(training.id).parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(store.lora_file(training.id).write_bytes, data)
    record = await store.finish_training(training.id, shared=shared)
    catalog.add_trained(trained_spec(record, store.lora_path(record)))
    return record


# --- which LoRAs a member may use, by which names ---------------------------------------------------------


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    store = await Store.open(tmp_path / "db.sqlite3", tmp_path / "images")
    configured = LoraSpec(name="Red ball", source="/x/configured.safetensors", weight=0.6)
    catalog = Catalog([ModelSpec(name="tiny", source="/x")], "tiny", loras=[configured])
    yield Services(Config(), store, JobQueue(store, EventBus(), Limits(), catalog=catalog), catalog)
    await store.close()


async def test_own_loras_come_first_then_configured_then_the_newest_shared(services: Services) -> None:
    store, catalog = services.store, services.catalog

    async def lora(owner: int, name: str, guild: int | None = GUILD, shared: bool = True) -> str:
        record = await add_lora(store, catalog, b"x", owner=owner, guild=guild, name=name, shared=shared)
        return trained_name(record.name, record.id)

    mine = await lora(1, "Red ball", shared=False)
    theirs = await lora(2, "Red ball")
    old_blue, new_blue = await lora(2, "Blue"), await lora(3, "Blue")
    private = await lora(2, "Secret", shared=False)
    elsewhere = await lora(2, "Far", guild=6)
    gone = await lora(2, "Gone")
    catalog.remove_trained(gone)  # e.g. deleted a moment ago

    usable = await usable_loras(services, 1, GUILD)
    assert usable["Red ball"] is catalog.trained[mine] and usable["Red ball"].name == mine
    assert usable["Blue"] is catalog.trained[new_blue]
    for name in (mine, theirs, old_blue, new_blue):  # each also by its unique name
        assert usable[name] is catalog.trained[name]
    assert not {"Secret", private, "Far", elsewhere, "Gone", gone} & set(usable)
    assert (await usable_loras(services, 4, GUILD))["Red ball"] is catalog.loras["Red ball"]  # configured beats shared
    assert set(await usable_loras(services, 4, None)) == {"Red ball"}  # in DMs: no one else's
    assert (await usable_loras(services, 2, None))["Secret"] is catalog.trained[private]  # one's own, everywhere


async def test_the_gate_check_refuses_loras_of_others_not_shared_here(services: Services) -> None:
    store, catalog = services.store, services.catalog
    shared = await add_lora(store, catalog, b"x", owner=1, guild=GUILD, shared=True)
    request = txt2img("a sks ball", loras=((trained_name(shared.name, shared.id), 1.0),))
    await check_lora_access(services, 1, None, request)  # the owner, anywhere
    await check_lora_access(services, 2, GUILD, request)  # shared here
    for guild, where in ((6, "on this server"), (None, "in direct messages")):
        with pytest.raises(
            NotAllowed, match=f"The LoRA 'Red ball' belongs to another member and is not shared {where}"
        ):
            await check_lora_access(services, 2, guild, request)
    await check_lora_access(services, 2, 6, txt2img(loras=(("Red ball", 1.0),)))  # the configured one: everyone's


# --- through Discord ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_bot_engine(tiny_sd_dir: Path) -> Engine:
    return Engine({"tiny": ModelSpec(name="tiny", source=str(tiny_sd_dir))}, device="cpu", preview_every=2)


@dataclasses.dataclass
class Rig:
    running: Running
    lora_file: bytes

    @property
    def fake(self) -> FakeDiscord:
        return self.running.fake

    async def train(self, user: FakeUser, name: str = "Red ball", **changes) -> LoraRecord:
        services = self.running.bot.services
        guild = self.fake.guild.id
        return await add_lora(
            services.store, services.catalog, self.lora_file, owner=user.id, guild=guild, name=name, **changes
        )


@pytest.fixture
def start_trained_bot(fake_discord: FakeDiscord, tiny_sd_dir: Path, tmp_path: Path, trained_bot_engine, lora_file):
    """The bot with the tiny SD model, its engine reading LoRAs from the bot's catalog (as bot_parts wires it)."""

    @asynccontextmanager
    async def start() -> AsyncIterator[Rig]:
        config = make_config(fake_discord, tiny_sd_dir, tmp_path)
        trained_bot_engine.models = config.model_map
        async with bot_parts(config, trained_bot_engine) as (bot, worker), running_client(bot, fake_discord):
            await fake_discord.wait_until(lambda: fake_discord.registered_commands(fake_discord.guild.id) or None)
            yield Rig(Running(fake_discord, bot, worker, config), lora_file)

    return start


async def imagine(rig: Rig, user: FakeUser, options: dict) -> dict:
    handle = await rig.fake.send_slash_command("imagine", {"prompt": "a sks ball", "seed": 3} | options, user=user)
    return await handle.wait_for_original(has_image, timeout=60)


async def refusal(handle) -> str:
    callback = await handle.wait_for_callback()
    assert callback["data"]["flags"] & EPHEMERAL, callback
    return callback["data"]["content"]


async def test_the_owner_uses_a_trained_lora_by_its_plain_name_and_the_job_says_its_unique_name(
    start_trained_bot,
) -> None:
    async with start_trained_bot() as rig:
        alice = rig.fake.member
        record = await rig.train(alice)
        unique = trained_name(record.name, record.id)
        final = await imagine(rig, alice, {"lora": "Red ball"})
        job = await delivered_job(rig.running, job_id_of(final))
        assert job.prompt == f"a sks ball <lora:{unique}:1>" and job.params["loras"] == [[unique, 1.0]]

        final = await imagine(rig, alice, {"prompt": "a sks ball <lora:Red ball:0.8>, studio light"})
        job = await delivered_job(rig.running, job_id_of(final))
        assert job.prompt == f"a sks ball <lora:{unique}:0.8>, studio light"
        image = (await rig.running.store.images_for_job(job.id))[0]
        parameters = read_parameters(rig.running.store.image_path(image).read_bytes())
        assert f"<lora:{unique}:0.8>" in parameters and f'Lora hashes: "{unique}: ' in parameters


async def test_another_member_may_use_it_only_once_it_is_shared(start_trained_bot) -> None:
    async with start_trained_bot() as rig:
        fake = rig.fake
        record = await rig.train(fake.member)
        unique = trained_name(record.name, record.id)
        bob = fake.other_member
        by_name = await fake.send_slash_command("imagine", {"prompt": "x", "lora": "Red ball"}, user=bob)
        assert "There is no LoRA called 'Red ball'" in await refusal(by_name)
        in_tag = await fake.send_slash_command("imagine", {"prompt": "x <lora:Red ball:0.8>"}, user=bob)
        assert "There is no LoRA called 'Red ball'" in await refusal(in_tag)
        guessed = await fake.send_slash_command("imagine", {"prompt": f"x <lora:{unique}:0.8>"}, user=bob)
        assert "The LoRA 'Red ball' belongs to another member and is not shared on this server." in await refusal(
            guessed
        )
        assert await rig.running.store.recent_jobs() == []  # nothing stored

        assert await rig.running.store.set_lora_shared(record.id, True)
        job = await delivered_job(rig.running, job_id_of(await imagine(rig, bob, {"lora": "Red ball"})))
        assert job.user_id == bob.id and job.params["loras"] == [[unique, 1.0]]


async def test_a_button_pressed_by_another_member_on_a_private_lora_picture_is_refused(start_trained_bot) -> None:
    async with start_trained_bot() as rig:
        fake = rig.fake
        await rig.train(fake.member)
        final = await imagine(rig, fake.member, {"lora": "Red ball"})
        for action in ("imagine:reroll", "imagine:vary"):
            click = await fake.send_button_click(int(final["id"]), button(final, action), user=fake.other_member)
            assert "belongs to another member and is not shared on this server" in await refusal(click), action
        assert len(await rig.running.store.recent_jobs()) == 1  # only alice's
        mine = await fake.send_button_click(int(final["id"]), button(final, "imagine:reroll"), user=fake.member)
        job = await delivered_job(rig.running, job_id_of(await mine.wait_for_original(has_image, timeout=60)))
        assert job.user_id == fake.member.id


async def test_the_picker_shows_a_trained_lora_to_its_owner_only_until_shared(start_trained_bot) -> None:
    async with start_trained_bot() as rig:
        fake = rig.fake
        record = await rig.train(fake.member)
        await rig.train(fake.member, "Neon", kind="sdxl")  # not for the sd model

        async def choices(user: FakeUser, typed: str = "") -> list[dict]:
            handle = await fake.send_autocomplete("imagine", {"prompt": "x", "lora": typed}, focused="lora", user=user)
            return await handle.wait_for_choices()

        unique = trained_name(record.name, record.id)
        assert await choices(fake.member) == [{"name": "Red ball (yours) · trigger: sks", "value": unique}]
        assert await choices(fake.member, "blue") == []
        assert await choices(fake.other_member) == []
        await rig.running.store.set_lora_shared(record.id, True)
        assert await choices(fake.other_member, "red") == [
            {"name": "Red ball (shared by a member) · trigger: sks", "value": unique}
        ]


async def test_a_remix_reply_uses_the_members_lora_by_its_tag(start_trained_bot) -> None:
    async with start_trained_bot() as rig:
        fake = rig.fake
        record = await rig.train(fake.member)
        upload = await fake.post_user_message("my ball", attachments=[("ball.png", png(), "image/png")])
        reply = await fake.post_user_message("a sks ball <lora:Red ball:0.5> --seed 2", reply_to=int(upload["id"]))
        final = await fake.wait_for_message(lambda m: answer_to(fake, reply)(m) and has_image(m), timeout=60)
        job = await delivered_job(rig.running, job_id_of(final))
        unique = trained_name(record.name, record.id)
        assert job.prompt == f"a sks ball <lora:{unique}:0.5>" and job.params["loras"] == [[unique, 0.5]]

        theirs = await fake.post_user_message(
            "a sks ball <lora:Red ball:0.5>", reply_to=int(upload["id"]), user=fake.other_member
        )
        answer = await fake.wait_for_message(answer_to(fake, theirs), timeout=10)
        assert "There is no LoRA called 'Red ball'" in answer["content"]
