"""A tiny random-weight Stable Diffusion 3 pipeline: two CLIP encoders and T5, a one-block MMDiT, a 16-channel VAE.

Sizes follow diffusers' tests/pipelines/stable_diffusion_3 get_dummy_components, except that the VAE keeps
the real 8x downsampling and the transformer the real 2x2 patches, so sides must be multiples of 16.
"""

from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from transformers import CLIPTextModelWithProjection

from generation.tiny.flux import LATENT_CHANNELS, tiny_flow_vae
from generation.tiny.stable_diffusion import TEXT_HIDDEN, text_config, tiny_tokenizer
from generation.tiny.t5 import tiny_t5_encoder, tiny_t5_tokenizer

# SD3 pads the two CLIP embeddings, concatenated, up to the T5 width: T5 must be at least that wide.
SD3_T5_HIDDEN = 2 * TEXT_HIDDEN


def build_tiny_sd3() -> StableDiffusion3Pipeline:
    """A tiny SD3-shaped pipeline with random weights."""
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=8,  # latent side: 64 px by default
        patch_size=2,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,  # = heads x head dim
        joint_attention_dim=SD3_T5_HIDDEN,
        pooled_projection_dim=2 * TEXT_HIDDEN,  # both CLIP projections, concatenated
    )
    tokenizer = tiny_tokenizer()
    t5_tokenizer = tiny_t5_tokenizer(max_length=512)
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=tiny_flow_vae(shift_factor=0.0609, scaling_factor=1.5305),
        text_encoder=CLIPTextModelWithProjection(text_config(tokenizer)),
        tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(text_config(tokenizer)),
        tokenizer_2=tiny_tokenizer(),
        text_encoder_3=tiny_t5_encoder(t5_tokenizer, d_model=SD3_T5_HIDDEN),
        tokenizer_3=t5_tokenizer,
        image_encoder=None,
        feature_extractor=None,
    )
