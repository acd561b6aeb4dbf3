"""A tiny random-weight Karlo (diffusers' UnCLIPPipeline): prior, 64 px decoder, 64 → 256 px super-resolution.

Shapes follow diffusers' tests/pipelines/unclip dummies and Kakao Brain's conversion script
(scripts/convert_kakao_brain_unclip_to_diffusers.py), with the real working sizes kept: the decoder makes 64 px
pictures and the super-resolution UNets 256 px ones, so the family's one size (256x256) holds. The prior is
built as for Kandinsky (generation.tiny.kandinsky.tiny_prior), so prompts reach the picture.
"""

from __future__ import annotations

import torch
from diffusers import UnCLIPPipeline, UnCLIPScheduler, UNet2DConditionModel, UNet2DModel
from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
from transformers import CLIPTextModelWithProjection

from generation.tiny.kandinsky import for_inference, prior_scheduler, tiny_prior
from generation.tiny.stable_diffusion import TEXT_HIDDEN, text_config, tiny_tokenizer

DECODER_SIZE, SUPER_RES_SIZE = 64, 256
DECODER_CHANNELS = (16, 32)
CROSS_ATTENTION = 32


def _decoder() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=DECODER_SIZE,
        in_channels=3,
        out_channels=6,  # RGB noise and its learned variance
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=DECODER_CHANNELS,
        norm_num_groups=8,
        layers_per_block=1,
        cross_attention_dim=CROSS_ATTENTION,
        attention_head_dim=4,
        resnet_time_scale_shift="scale_shift",
        class_embed_type="identity",  # the prompt's and image embedding's time projections arrive as class labels
    )


def _super_res() -> UNet2DModel:
    return UNet2DModel(
        sample_size=SUPER_RES_SIZE,
        in_channels=6,  # the noisy picture and the upscaled 64 px one
        out_channels=3,
        down_block_types=("ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D"),
        up_block_types=("ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"),
        block_out_channels=(8, 8),
        norm_num_groups=4,
        layers_per_block=1,
        add_attention=False,  # as Karlo's: attention over 256² pixels would dwarf everything else
    )


def build_tiny_karlo() -> UnCLIPPipeline:
    """A tiny Karlo-shaped unCLIP pipeline with random weights and Karlo's three schedulers."""
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    text_proj = UnCLIPTextProjModel(
        clip_embeddings_dim=TEXT_HIDDEN,
        time_embed_dim=DECODER_CHANNELS[0] * 4,
        cross_attention_dim=CROSS_ATTENTION,
    )
    with torch.no_grad():  # zeros as built: the unconditional half of the decoder's guidance would see nothing
        text_proj.learned_classifier_free_guidance_embeddings.normal_(std=0.1)
    pipe = UnCLIPPipeline(
        prior=tiny_prior(TEXT_HIDDEN),
        decoder=_decoder(),
        text_encoder=CLIPTextModelWithProjection(text_config(tokenizer, projection_dim=TEXT_HIDDEN)),
        tokenizer=tokenizer,
        text_proj=text_proj,
        super_res_first=_super_res(),
        super_res_last=_super_res(),
        prior_scheduler=prior_scheduler(clip_sample_range=5.0),
        decoder_scheduler=UnCLIPScheduler(
            variance_type="learned_range", prediction_type="epsilon", num_train_timesteps=1000
        ),
        super_res_scheduler=UnCLIPScheduler(
            variance_type="fixed_small_log", prediction_type="epsilon", num_train_timesteps=1000
        ),
    )
    return for_inference(pipe)
