"""`/train` through the loopback Discord with 4 photos, `imagine-bot run` killed with SIGKILL mid-training, started
again: the training resumes from its last checkpoint, finishes once, and /imagine uses the LoRA it made."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from tests.bot.conftest import decode, has_image
from tests.bot.test_train import photo_options
from tests.reliability.process import BotProcess, poll, query, write_config
from tests.reliability.table import check

STEPS = 40


def picture(fake, message: dict) -> np.ndarray:
    attachment = next(a for a in message["attachments"] if "preview" not in a["filename"])
    return np.asarray(decode(fake, attachment).convert("RGB"), dtype=np.int16)


def shown_steps(fake, since: int) -> list[int]:
    """The step counts the training's message showed, in the requests the fake got after `since`."""
    steps = []
    for request in fake.requests[since:]:
        found = re.search(rf"step (\d+)/{STEPS}", json.dumps(request.json or {}, ensure_ascii=False))
        if found:
            steps.append(int(found[1]))
    return steps


async def test_train_survives_sigkill_and_its_lora_is_used(fake_discord, tiny_sd_dir: Path, tmp_path: Path) -> None:
    fake = fake_discord
    faults = tmp_path / "gpu-faults.json"
    faults.write_text(json.dumps({"seconds_per_step": 0.05}))  # a slower GPU: the kill lands mid-training
    config = write_config(tmp_path, fake, tiny_sd_dir, generation={"train_chunk_steps": 4, "train_learning_rate": 0.05})
    env = {"IMAGINE_GPU_FAULTS": str(faults)}
    first = await BotProcess(config, fake, tmp_path / "first.log", module="tests.reliability.launch", env=env).start()
    try:
        options = {"name": "Red ball", "trigger": "sks", "subject": "ball", "steps": STEPS}
        handle = await fake.send_slash_command("train", options, attachments=photo_options(4))

        def mid_training() -> dict | None:
            rows = query(first.db, "SELECT status, steps_done, checkpoint_path FROM trainings")
            return rows[0] if rows and rows[0]["status"] == "running" and rows[0]["steps_done"] >= 8 else None

        await poll(mid_training, timeout=120, what="a training with two chunks done")
    finally:
        first.kill()
    at_kill = query(first.db, "SELECT steps_done, attempts FROM trainings")[0]
    checkpoint = first.images / "trainings" / "1" / "checkpoint.pt"
    had_checkpoint = checkpoint.is_file()
    restarted_at = len(fake.requests)

    faults.write_text("{}")
    second = BotProcess(config, fake, tmp_path / "second.log", module="tests.reliability.launch", env=env)
    await second.start()
    try:
        done = await handle.wait_for_original(lambda m: "✅ Done" in (m.get("content") or ""), timeout=180)
        prompt = {"prompt": "a photo of sks ball", "seed": 7}
        base = await (await fake.send_slash_command("imagine", prompt)).wait_for_original(has_image, timeout=60)
        styled_handle = await fake.send_slash_command("imagine", prompt | {"lora": "Red ball"})
        styled = await styled_handle.wait_for_original(has_image, timeout=60)
    finally:
        exit_status = await second.stop()

    trainings = query(second.db, "SELECT status, steps_done, attempts, lora_id, delivered_at FROM trainings")
    loras = query(second.db, "SELECT name, path FROM loras")
    resumed_from = min(shown_steps(fake, restarted_at) or [0])
    samples = [a for a in done["attachments"] if a["filename"].startswith("sample-")]
    differs = bool(np.abs(picture(fake, styled) - picture(fake, base)).max() > 0)
    with Image.open(io.BytesIO(fake.attachment_bytes(samples[0]))) as sample:
        sample_size = sample.size
    ok = (
        had_checkpoint
        and len(trainings) == 1
        and trainings[0]["status"] == "done"
        and trainings[0]["steps_done"] == STEPS
        and trainings[0]["attempts"] == 2
        and trainings[0]["delivered_at"]
        and len(loras) == 1
        and resumed_from >= at_kill["steps_done"] > 0
        and len(samples) == 2
        and sample_size == (64, 64)
        and differs
        and exit_status == 0
    )
    check(
        "crash",
        "SIGKILL mid-/train (4 photos, 40 steps in chunks of 4), then start again",
        "resumes from the last checkpoint, finishes once, one LoRA, /imagine uses it",
        f"killed at step {at_kill['steps_done']} (checkpoint on disk: {had_checkpoint}); after restart the message "
        f"went on from step {resumed_from}; {len(loras)} LoRA row(s), attempts {trainings[0]['attempts']}, "
        f"{len(samples)} samples; /imagine with the LoRA differs from the base for seed 7: {differs}",
        ok,
    )
