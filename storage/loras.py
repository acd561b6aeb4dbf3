"""The LoRA library: the LoRAs members trained, who owns them, where they are shared; files under the store's root."""

from __future__ import annotations

import asyncio
from pathlib import Path

from storage.database import Database, fetch_one
from storage.files import ImageFiles
from storage.records import LoraRecord, lora_from_row


class LoraLibrary:
    """Live and deleted LoRAs (deleted ones keep their row for history; their file is gone)."""

    _db: Database
    _files: ImageFiles

    def lora_path(self, record: LoraRecord) -> Path:
        """The absolute path of a LoRA's .safetensors file."""
        return self._files.absolute(record.path)

    async def get_lora(self, lora_id: int) -> LoraRecord | None:
        """The LoRA with this id (deleted ones included, for history), or None."""
        row = await self._db.fetch_one("SELECT * FROM loras WHERE id = ?", (lora_id,))
        return None if row is None else lora_from_row(row)

    async def lora_by_name(self, owner_id: int, name: str) -> LoraRecord | None:
        """The owner's live LoRA with this name (case-insensitive), or None."""
        row = await self._db.fetch_one(
            "SELECT * FROM loras WHERE owner_id = ? AND name = ? COLLATE NOCASE AND deleted_at IS NULL",
            (owner_id, name),
        )
        return None if row is None else lora_from_row(row)

    async def loras_for(self, user_id: int, guild_id: int | None) -> list[LoraRecord]:
        """The LoRAs a user may use here: their own, and those shared in this guild; newest first."""
        rows = await self._db.fetch_all(
            "SELECT * FROM loras WHERE deleted_at IS NULL AND (owner_id = ? OR (shared = 1 AND guild_id = ?)) "
            "ORDER BY id DESC",
            (user_id, guild_id),
        )
        return [lora_from_row(row) for row in rows]

    async def live_loras(self) -> list[LoraRecord]:
        """Every LoRA not deleted, oldest first (the bot offers them, each to whom it belongs)."""
        rows = await self._db.fetch_all("SELECT * FROM loras WHERE deleted_at IS NULL ORDER BY id")
        return [lora_from_row(row) for row in rows]

    async def loras_made_in(self, guild_id: int) -> list[LoraRecord]:
        """The live LoRAs trained in a guild, shared or not (its moderators may delete them); newest first."""
        rows = await self._db.fetch_all(
            "SELECT * FROM loras WHERE deleted_at IS NULL AND guild_id = ? ORDER BY id DESC", (guild_id,)
        )
        return [lora_from_row(row) for row in rows]

    async def set_lora_shared(self, lora_id: int, shared: bool) -> bool:
        """Share a live LoRA with its guild, or stop sharing it; True if it changed."""
        async with self._db.write() as db:
            cursor = await db.execute(
                "UPDATE loras SET shared = ? WHERE id = ? AND deleted_at IS NULL AND shared != ?",
                (int(shared), lora_id, int(shared)),
            )
            return cursor.rowcount == 1

    async def delete_lora(self, lora_id: int) -> bool:
        """Delete a LoRA's file, keeping its row marked deleted (its name becomes free); True if it was live."""
        async with self._db.write() as db:
            row = await fetch_one(db, "SELECT path, deleted_at FROM loras WHERE id = ?", (lora_id,))
            if row is None:
                return False
            await db.execute(
                "UPDATE loras SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL", (self._db.now(), lora_id)
            )
        # Rows first, files after (as with images): a crash in between leaves an orphan file, never a dangling row.
        await asyncio.to_thread(self._files.delete, [row["path"]])
        return row["deleted_at"] is None
