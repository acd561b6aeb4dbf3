"""A tiny random-weight FLUX.1 pipeline: CLIP + T5 text encoders, a one-block transformer, a 16-channel VAE.

Sizes follow diffusers' tests/pipelines/flux get_dummy_components, except that the VAE keeps the real
8x downsampling and 16 latent channels, so 2x2 packing makes the real rule hold: sides in multiples of 16.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from transformers import CLIPTextModel

from generation.tiny.stable_diffusion import TEXT_HIDDEN, text_config, tiny_tokenizer, tiny_vae
from generation.tiny.t5 import T5_HIDDEN, tiny_t5_encoder, tiny_t5_tokenizer

LATENT_CHANNELS = 16


def tiny_flow_vae(shift_factor: float, scaling_factor: float) -> AutoencoderKL:
    """A 16-channel VAE with 8x downsampling and no quant convs, as FLUX and SD3 ship it."""
    return tiny_vae(
        latent_channels=LATENT_CHANNELS,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=shift_factor,
        scaling_factor=scaling_factor,
    )


def build_tiny_flux(guidance_embeds: bool = False) -> FluxPipeline:
    """A tiny FLUX.1-schnell-shaped pipeline; `guidance_embeds=True` makes it dev-shaped (embedded guidance)."""
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=LATENT_CHANNELS * 4,  # packed 2x2 latent patches
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=T5_HIDDEN,
        pooled_projection_dim=TEXT_HIDDEN,
        axes_dims_rope=(4, 4, 8),
        guidance_embeds=guidance_embeds,
    )
    # The real schedulers: schnell a fixed shift of 1, dev a resolution-dependent shift.
    scheduler = (
        FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)
        if guidance_embeds
        else FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    )
    tokenizer = tiny_tokenizer()
    t5_tokenizer = tiny_t5_tokenizer(max_length=512)
    return FluxPipeline(
        scheduler=scheduler,
        vae=tiny_flow_vae(shift_factor=0.1159, scaling_factor=0.3611),
        text_encoder=CLIPTextModel(text_config(tokenizer)),
        tokenizer=tokenizer,
        text_encoder_2=tiny_t5_encoder(t5_tokenizer),
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
        image_encoder=None,
        feature_extractor=None,
    )
