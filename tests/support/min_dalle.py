"""min-dalle's own code on a directory of weights: the reference the DALL·E family is checked against."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from unittest import mock

import torch
from PIL import Image

from generation.families.dalle_layout import CONFIG_FILE


def min_dalle_image(directory: Path, prompt: str, seed: int, supercondition_factor: float = 16) -> Image.Image:
    """`MinDalle.generate_image` on one image (grid_size 1), loaded by MinDalle's own init_* methods.

    Only `MinDalle.__init__` is skipped: it hard-codes Mini's or Mega's sizes (the tiny model's are in its
    dalle_config.json) and its tokenizer step always GETs config.json from the hub, ignored, which is stubbed here.
    Its import and its run change torch's grad mode, thread count and global seed: all are put back.
    """
    grad, threads = torch.is_grad_enabled(), torch.get_num_threads()
    try:
        from min_dalle import min_dalle as package

        torch.set_num_threads(threads)  # its import set the CPU count: the run uses the caller's threads
        sizes = json.loads((directory / CONFIG_FILE).read_text())
        model = package.MinDalle.__new__(package.MinDalle)
        model.device, model.dtype, model.is_mega, model.is_reusable, model.is_verbose = (
            "cpu",
            torch.float32,
            sizes["kind"] == "dalle-mega",
            True,
            False,
        )
        model.text_token_count = 64
        for key in ("layer_count", "attention_head_count", "embed_count", "glu_embed_count"):
            setattr(model, key, sizes[key])
        model.text_vocab_count, model.image_vocab_count = sizes["text_vocab_count"], sizes["image_vocab_count"]
        model.vocab_path, model.merges_path = str(directory / "vocab.json"), str(directory / "merges.txt")
        model.encoder_params_path = str(directory / "encoder.pt")
        model.decoder_params_path = str(directory / "decoder.pt")
        model.detoker_params_path = str(directory / "detoker.pt")
        with mock.patch.object(package.requests, "get", lambda url: None):  # no network here; the reply is unused
            model.init_tokenizer()
        model.init_encoder()
        model.init_decoder()
        model.init_detokenizer()
        # As min-dalle runs it (its import turns grad off); it seeds the global generator.
        with torch.no_grad(), torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*autocast")  # torch.cuda.amp.autocast, here without CUDA
            return model.generate_image(
                text=prompt, seed=seed, grid_size=1, supercondition_factor=supercondition_factor
            )
    finally:
        torch.set_grad_enabled(grad)
        torch.set_num_threads(threads)
