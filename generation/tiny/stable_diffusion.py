"""Tiny random-weight Stable Diffusion and SDXL pipelines, and the CLIP parts other families reuse.

The VAE keeps the real 8x downsampling so size rules behave as with Stable Diffusion.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

TEXT_HIDDEN = 32


def _byte_chars() -> list[str]:
    # GPT-2/CLIP byte-level alphabet: printable bytes map to themselves, the rest to code points 256+.
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    extra = (b for b in range(256) if b not in printable)
    return [chr(b) for b in printable] + [chr(256 + i) for i, _ in enumerate(extra)]


def tiny_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer built from an in-memory vocabulary (no hub download)."""
    chars = _byte_chars()
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    vocab = {token: i for i, token in enumerate(tokens)}
    # CLIPTokenizer(vocab_file=...) silently ignores the files; passing the dict and merges works.
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def text_config(tokenizer: CLIPTokenizer, projection_dim: int | None = None) -> CLIPTextConfig:
    return CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=37,
        layer_norm_eps=1e-5,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(tokenizer),
        projection_dim=projection_dim or TEXT_HIDDEN,
    )


def tiny_vae(**config: object) -> AutoencoderKL:
    """A tiny VAE with the real 8x downsampling; `config` overrides (other families' latent channels)."""
    return AutoencoderKL(
        **{
            "block_out_channels": (8, 8, 16, 16),
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4,
            "latent_channels": 4,
            "norm_num_groups": 4,
            "layers_per_block": 1,
            "sample_size": 64,
        }
        | config
    )


def tiny_preview_vae() -> AutoencoderTiny:
    """A tiny TAESD-shaped decoder for preview tests (8x upsampling like the real one)."""
    return AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
    )


def _unet(**config: object) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        **config,
    )


def build_tiny_sd() -> StableDiffusionPipeline:
    """A tiny Stable Diffusion 1.x-shaped pipeline with random weights."""
    torch.manual_seed(0)
    unet = _unet(cross_attention_dim=TEXT_HIDDEN, attention_head_dim=4)
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1
    )
    vae = tiny_vae()
    tokenizer = tiny_tokenizer()
    text_encoder = CLIPTextModel(text_config(tokenizer))
    return StableDiffusionPipeline(
        unet=unet,
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_sdxl() -> StableDiffusionXLPipeline:
    """A tiny SDXL-shaped pipeline (two text encoders, micro-conditioning) with random weights."""
    torch.manual_seed(0)
    unet = _unet(
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + TEXT_HIDDEN,
        cross_attention_dim=2 * TEXT_HIDDEN,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
        steps_offset=1,
    )
    tokenizer = tiny_tokenizer()
    return StableDiffusionXLPipeline(
        unet=unet,
        scheduler=scheduler,
        vae=tiny_vae(),
        text_encoder=CLIPTextModel(text_config(tokenizer)),
        text_encoder_2=CLIPTextModelWithProjection(text_config(tokenizer)),
        tokenizer=tokenizer,
        tokenizer_2=tiny_tokenizer(),
    )
