"""A tiny random-weight DeepFloyd IF cascade: stage I at the top level, `stage_2/` and `stage_3/` inside.

Sizes follow diffusers' tests/pipelines/deepfloyd_if `get_dummy_components` and the upscaler's fast tests,
with the real working sizes kept: stage I makes 64 px, stage II 4x that, stage III (the SD x4 upscaler) 4x
again. Where the pictures are large the UNets attend to the text only (no self-attention, no attention in the
upscaler's middle block), so CPU tests stay fast.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    IFPipeline,
    IFSuperResolutionPipeline,
    StableDiffusionUpscalePipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextModel

from generation.tiny.stable_diffusion import TEXT_HIDDEN, text_config, tiny_tokenizer
from generation.tiny.t5 import T5_HIDDEN, tiny_t5_encoder, tiny_t5_tokenizer

STAGE_1_SIZE = 64  # the UNet's sample_size: diffusers resizes img2img inputs to it


def _if_scheduler() -> DDPMScheduler:
    # IF's own sampler: learned variance and dynamic thresholding, as the real checkpoints ship it.
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        beta_start=0.0001,
        beta_end=0.02,
        thresholding=True,
        dynamic_thresholding_ratio=0.95,
        sample_max_value=1.0,
        prediction_type="epsilon",
        variance_type="learned_range",
    )


def _if_unet(**config: object) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        out_channels=6,  # RGB noise and RGB variance ("learned_range")
        cross_attention_dim=T5_HIDDEN,
        encoder_hid_dim=T5_HIDDEN,
        attention_head_dim=8,
        addition_embed_type="text",
        addition_embed_type_num_heads=2,
        cross_attention_norm="group_norm",
        resnet_time_scale_shift="scale_shift",
        act_fn="gelu",
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        **config,
    )


def build_tiny_if_stage_1() -> IFPipeline:
    """Stage I: T5 text encoder and a 64 px pixel-space UNet."""
    torch.manual_seed(0)
    tokenizer = tiny_t5_tokenizer()
    return IFPipeline(
        tokenizer=tokenizer,
        text_encoder=tiny_t5_encoder(tokenizer),
        unet=_if_unet(
            sample_size=STAGE_1_SIZE,
            in_channels=3,
            layers_per_block=1,
            block_out_channels=(32, 64),
            down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
            up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        ),
        scheduler=_if_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )


def build_tiny_if_stage_2() -> IFSuperResolutionPipeline:
    """Stage II: a 4x super-resolution UNet conditioned on stage I's image; no text encoder of its own."""
    torch.manual_seed(0)
    unet = _if_unet(
        sample_size=4 * STAGE_1_SIZE,
        in_channels=6,  # noisy image + upscaled stage I image
        layers_per_block=1,
        block_out_channels=(8, 16, 32),
        norm_num_groups=8,
        down_block_types=("ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"),
        only_cross_attention=True,
        class_embed_type="timestep",  # the noise level of the upscaled input
        mid_block_scale_factor=1.414,
        time_embedding_act_fn="gelu",
        time_embedding_dim=32,
    )
    noising = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", beta_start=0.0001, beta_end=0.02
    )
    return IFSuperResolutionPipeline(
        tokenizer=None,
        text_encoder=None,
        unet=unet,
        scheduler=_if_scheduler(),
        image_noising_scheduler=noising,
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )


def build_tiny_sd_upscaler() -> StableDiffusionUpscalePipeline:
    """Stage III: the SD x4 upscaler's shape (latents at the input size, a 4x VAE), CLIP text as in SD."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16 * STAGE_1_SIZE,
        in_channels=7,  # 4 latent channels + the RGB low-resolution image
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=8,
        use_linear_projection=True,
        only_cross_attention=True,
        mid_block_type=None,  # its self-attention would span all of stage II's pixels
        num_class_embeds=400,  # noise levels up to max_noise_level
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 16),  # three blocks: 4x, like the upscaler's VAE
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
        mid_block_add_attention=False,  # latents are as large as stage II's image
        scaling_factor=0.08333,
    )
    tokenizer = tiny_tokenizer()
    return StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=CLIPTextModel(text_config(tokenizer)),
        tokenizer=tokenizer,
        unet=unet,
        low_res_scheduler=DDPMScheduler(),
        scheduler=DDIMScheduler(prediction_type="v_prediction"),
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        max_noise_level=350,
    )


def write_tiny_if(directory: Path) -> None:
    """Write the three stages where the family looks for them: `DIR`, `DIR/stage_2`, `DIR/stage_3`."""
    directory = Path(directory)
    build_tiny_if_stage_1().save_pretrained(directory)
    build_tiny_if_stage_2().save_pretrained(directory / "stage_2")
    build_tiny_sd_upscaler().save_pretrained(directory / "stage_3")
