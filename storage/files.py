"""Image files under one directory: atomic, fsynced writes; names chosen by us, never by users.

Everything here blocks; the store calls it through `asyncio.to_thread`.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from generation.atomic import write_atomic

PROBE_NAME = ".room-check"  # never a stored name: those are inputs/… and jobs/…
PROBE_BYTES = 64 * 1024


@dataclass(frozen=True)
class WrittenFile:
    """A file now durable on disk: where it is (relative), its hash and size."""

    path: str
    sha256: str
    size_bytes: int


def png_encode(image: Image.Image) -> bytes:
    """Lossless PNG bytes of an image, keeping its mode (a mask stays single-channel)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class ImageFiles:
    """The images directory: inputs are content-addressed, outputs live under their job."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def absolute(self, relative: str) -> Path:
        """The absolute path of a stored relative path."""
        return self.root / relative

    def save_input(self, image: Image.Image) -> WrittenFile:
        """Store an img2img/inpaint input as PNG; identical inputs (remixes) share one file."""
        data = png_encode(image)
        digest = hashlib.sha256(data).hexdigest()
        # Content addressing lets us write inputs before the job row (and its id) exists.
        relative = f"inputs/{digest[:2]}/{digest}.png"
        if not self.absolute(relative).exists():
            self._write_atomic(relative, data)
        return WrittenFile(relative, digest, len(data))

    def save_output(self, job_id: int, idx: int, data: bytes) -> WrittenFile:
        """Store one generated PNG as `jobs/{job_id}/{idx}-{sha8}.png`."""
        digest = hashlib.sha256(data).hexdigest()
        relative = f"jobs/{int(job_id)}/{int(idx)}-{digest[:8]}.png"
        self._write_atomic(relative, data)
        return WrittenFile(relative, digest, len(data))

    def probe(self) -> None:
        """Write and remove a small file the way images are written: raises what an image write would (ENOSPC)."""
        self._write_atomic(PROBE_NAME, bytes(PROBE_BYTES))
        self.absolute(PROBE_NAME).unlink(missing_ok=True)

    def load(self, relative: str) -> Image.Image:
        """Read a stored image fully into memory, so no file handle stays open."""
        with Image.open(self.absolute(relative)) as image:
            image.load()
            return image.copy()

    def delete(self, relatives: list[str]) -> None:
        """Remove files; missing ones are fine, so a retried delete succeeds."""
        for relative in relatives:
            self.absolute(relative).unlink(missing_ok=True)

    def _write_atomic(self, relative: str, data: bytes) -> None:
        write_atomic(self.absolute(relative), data)
