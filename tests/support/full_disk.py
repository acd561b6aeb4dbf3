"""A full disk for the images folder, switched on and off while the bot runs.

No tmpfs without root here (and CI runs as a plain user), so the fault is injected where image bytes reach
the disk: every atomic write of the image store (`storage.files.write_atomic`: results, inputs and the
store's room check) fails with the OSError a full filesystem gives, ENOSPC, until `free()`. Everything above
that line, the store, worker, queue, delivery and the real discord.py client, runs as in production.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import storage.files


class FullDisk:
    """While `full`, writes of image files fail with ENOSPC; counts what was refused."""

    def __init__(self) -> None:
        self.full = True
        self.refused: list[Path] = []
        self._write = storage.files.write_atomic

    def write(self, target: Path, data: bytes) -> None:
        if self.full:
            self.refused.append(target)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        self._write(target, data)

    def free(self) -> None:
        """Someone made room."""
        self.full = False


@contextmanager
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[FullDisk]:
    """The image store's disk is full from now until `.free()` (or the end of the block)."""
    disk = FullDisk()
    with monkeypatch.context() as patch:
        patch.setattr(storage.files, "write_atomic", disk.write)
        yield disk
