"""`imagine-bot tiny-model --kind dalle-mini` then `imagine-bot generate`, in subprocesses, against min-dalle itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sd_parsers import ParserManager

from tests.support.min_dalle import min_dalle_image
from tests.support.threads import ONE_THREAD, one_torch_thread
from tests.test_cli import imagine_bot

PROMPT = "a red cube on a table"


def test_tiny_model_then_generate_matches_min_dalle_and_names_its_one_size(tmp_path: Path) -> None:
    model, out = tmp_path / "M", tmp_path / "O"
    made = imagine_bot("tiny-model", str(model), "--kind", "dalle-mini", cwd=tmp_path, env=ONE_THREAD)
    assert made.returncode == 0, made.stderr
    result = imagine_bot(
        "generate", PROMPT, "--model", str(model), "--seed", "7", "--out", str(out), cwd=tmp_path, env=ONE_THREAD
    )
    assert result.returncode == 0, result.stderr
    (written,) = [Path(line) for line in result.stdout.splitlines()]
    assert written.parent == out and written.is_file()

    with Image.open(written) as image:
        info = ParserManager().parse(image)
        ours = np.asarray(image.convert("RGB"))
        parameters = image.info["parameters"]
    assert info.full_prompt == PROMPT
    assert info.samplers[0].name == "min-dalle top-k 256"
    # The kind's defaults (KIND_DEFAULTS): 16 token rows, min-dalle's supercondition factor 16, 256x256.
    assert info.samplers[0].parameters == {"cfg_scale": "16", "seed": "7", "steps": "16"}
    assert info.metadata["Size"] == "256x256" and "Model: M" in parameters
    with one_torch_thread():
        raw = min_dalle_image(model, PROMPT, seed=7)
    assert np.array_equal(ours, np.asarray(raw))

    refused = imagine_bot("generate", "x", "--model", str(model), "--size", "512x512", cwd=tmp_path, env=ONE_THREAD)
    assert refused.returncode == 1
    assert "The model 'M' (DALL·E Mini) makes 256x256 pictures only, not 512x512" in refused.stderr
