"""The raw UnCLIPPipeline for Karlo tests, built the one way diffusers 0.42.1 allows."""

from __future__ import annotations

from pathlib import Path

from diffusers import PriorTransformer, UnCLIPPipeline, UnCLIPScheduler, UNet2DConditionModel, UNet2DModel
from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
from transformers import CLIPTextModelWithProjection, CLIPTokenizer


def raw_unclip(directory: Path) -> UnCLIPPipeline:
    """UnCLIPPipeline from its parts, each loaded by its own class: its from_pretrained cannot resolve text_proj."""
    models = {"prior": PriorTransformer, "decoder": UNet2DConditionModel, "text_proj": UnCLIPTextProjModel}
    models |= {"super_res_first": UNet2DModel, "super_res_last": UNet2DModel}
    parts = {name: cls.from_pretrained(directory, subfolder=name) for name, cls in models.items()}
    schedulers = ("prior_scheduler", "decoder_scheduler", "super_res_scheduler")
    parts |= {name: UnCLIPScheduler.from_pretrained(directory, subfolder=name) for name in schedulers}
    pipe = UnCLIPPipeline(
        **parts,
        text_encoder=CLIPTextModelWithProjection.from_pretrained(directory, subfolder="text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(directory, subfolder="tokenizer"),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
