"""What messages about a training say: queued, step/total with loss and ETA, and how it ended."""

from __future__ import annotations

from bot.render import describe_eta, progress_bar, safe_text
from storage.records import LoraRecord, TrainingRecord


def headline(training: TrainingRecord) -> str:
    """The first line of every message about a training."""
    return (
        f"**Training “{safe_text(training.name, 60)}”** (trigger word `{safe_text(training.trigger_token, 40)}`, "
        f"{len(training.photos)} photos, model {safe_text(training.base_model, 60)})"
    )


def queued_text(training: TrainingRecord, position: int) -> str:
    """Shown while the training waits for its first turn on the GPU."""
    place = "next in line" if position == 1 else f"#{position} in line"
    return f"{headline(training)}\n⏳ Queued — {place}. It trains in turns, so others' pictures are made in between."


def progress_text(training: TrainingRecord, step: int, total: int, loss: float | None, eta: float | None) -> str:
    """Shown while it trains: step/total, the last loss, and the time left."""
    shown_loss = "" if loss is None else f" · loss {loss:.4f}"
    return f"{headline(training)}\n🧠 {progress_bar(step, total)} step {step}/{total}{shown_loss}{describe_eta(eta)}"


def done_text(training: TrainingRecord, lora: LoraRecord, samples: int, mention: bool) -> str:
    """The finished training, above its sample pictures."""
    who = f"<@{training.user_id}> " if mention else ""
    shown = "" if samples else "\n(No sample pictures could be shown.)"
    sharing = "shared with this server" if lora.shared else "only you can use it"
    return (
        f"{who}{headline(training)}\n✅ Done: the LoRA **{safe_text(lora.name, 60)}** is ready ({sharing}). "
        f"Use it with `/imagine lora:{safe_text(lora.name, 60)}` and the word `{safe_text(lora.trigger_token, 40)}` "
        f"in your prompt.{shown}"
    )


def failed_text(training: TrainingRecord, error: str, mention: bool) -> str:
    """A training that failed, with why."""
    who = f"<@{training.user_id}> " if mention else ""
    return f"{who}{headline(training)}\n❌ {error}"


def cancelled_text(training: TrainingRecord) -> str:
    """A training that was cancelled."""
    return f"{headline(training)}\n✖️ Cancelled. Nothing was kept."
