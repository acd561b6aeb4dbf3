"""Which LoRAs a member may use where, by the names they type: configured ones, their own, those shared here.

A trained LoRA goes by its unique name `NAME#ID` in requests and PNG parameters (members' names repeat), and
by its plain name where that is not ambiguous for this member. The gate checks access again for every request
(buttons and remixes carry unique names), so what is not listed here is refused there too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.moderation.policy import NotAllowed
from generation.catalog import trained_name
from generation.loras import shown
from generation.request import GenerationRequest
from generation.specs import LoraSpec
from storage.records import LoraRecord

if TYPE_CHECKING:
    from bot.services import Services


@dataclass(frozen=True)
class TrainedLora:
    """A trained LoRA this member may use here, and whether it is their own."""

    record: LoraRecord
    spec: LoraSpec  # the catalog's, under the unique name
    own: bool


async def trained_usable(services: Services, user_id: int, guild_id: int | None) -> list[TrainedLora]:
    """The member's own trained LoRAs and those shared in this guild that the catalog accepts; newest first."""
    trained = services.catalog.trained
    found = []
    for record in await services.store.loras_for(user_id, guild_id):
        spec = trained.get(trained_name(record.name, record.id))
        if spec is not None:  # e.g. deleted a moment ago
            found.append(TrainedLora(record, spec, own=record.owner_id == user_id))
    return found


async def usable_loras(services: Services, user_id: int, guild_id: int | None) -> dict[str, LoraSpec]:
    """Every LoRA the member may type here, by name: configured ones, and trained ones by unique and plain name.

    A plain name shared by several goes to the member's own LoRA, else the configured one, else the newest of
    those others shared; the rest stay reachable by their unique names.
    """
    trained = await trained_usable(services, user_id, guild_id)
    usable: dict[str, LoraSpec] = {}
    for lora in trained:  # newest first, so setdefault keeps the newest of a name
        if lora.own:
            usable.setdefault(lora.record.name, lora.spec)
    for name, spec in services.catalog.loras.items():
        usable.setdefault(name, spec)
    for lora in trained:
        usable.setdefault(lora.record.name, lora.spec)
    for lora in trained:
        usable.setdefault(lora.spec.name, lora.spec)
    return usable


def _lora_id(name: str) -> int | None:
    _, _, digits = name.rpartition("#")
    return int(digits) if digits.isdecimal() else None


async def check_lora_access(services: Services, user_id: int, guild_id: int | None, request: GenerationRequest) -> None:
    """Refuse a request using a trained LoRA that is neither the asker's nor shared in this guild (NotAllowed)."""
    for name, _ in request.loras:
        if name in services.catalog.loras or name not in services.catalog.trained:
            continue  # configured (everyone's), or unknown: the catalog refuses it by name
        lora_id = _lora_id(name)
        record = await services.store.get_lora(lora_id) if lora_id is not None else None
        if record is None or record.deleted_at is not None:
            raise NotAllowed(f"The LoRA '{shown(name)}' has been deleted.")
        if record.owner_id != user_id and not (record.shared and guild_id is not None and record.guild_id == guild_id):
            where = "on this server" if guild_id is not None else "in direct messages"
            raise NotAllowed(f"The LoRA '{shown(record.name)}' belongs to another member and is not shared {where}.")
