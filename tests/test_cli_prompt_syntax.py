"""A1111 prompt syntax through `imagine-bot generate`: `(word:1.6)` changes the picture, `(word:1.0)` does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.test_cli import imagine_bot


def test_the_cli_reads_a1111_weights(tmp_path: Path) -> None:
    model = tmp_path / "M"
    assert imagine_bot("tiny-model", str(model), cwd=tmp_path).returncode == 0
    made = {}
    for name, prompt in (("plain", "a red cube"), ("weighted", "a (red:1.6) cube"), ("neutral", "a (red:1.0) cube")):
        result = imagine_bot(
            "generate", prompt, "--model", str(model), "--seed", "7", "--steps", "4", "--size", "64x64",
            "--out", str(tmp_path / name), cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        (written,) = [Path(line) for line in result.stdout.splitlines()]
        with Image.open(written) as image:
            made[name] = np.asarray(image.convert("RGB"), dtype=np.int16)
    assert np.abs(made["weighted"] - made["plain"]).max() > 0
    assert np.array_equal(made["neutral"], made["plain"])
