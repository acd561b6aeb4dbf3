"""A tiny random-weight Kandinsky 2.2: the decoder at the top level, `prior/` and `inpaint_decoder/` inside.

Sizes follow the shapes of diffusers' tests/pipelines/kandinsky2_2 dummies (UNet with `addition_embed_type="image"`,
a spatially normalised VQ "MoVQ", PriorTransformer over CLIP text), with the real working rules kept: MoVQ
downsamples 8x and diffusers rounds latents up to multiples of 8, so sides are multiples of 64. The prior's
embedding (32) is a multiple of 16 like the real 1280, which the family's batching relies on (see
generation.families.kandinsky). A freshly built PriorTransformer has clip_std = 0 and would give every prompt
the same (zero) image embedding; the builder sets the embedding statistics and positions so prompts matter.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    DDPMScheduler,
    DiffusionPipeline,
    KandinskyV22InpaintPipeline,
    KandinskyV22Pipeline,
    KandinskyV22PriorPipeline,
    PriorTransformer,
    UnCLIPScheduler,
    UNet2DConditionModel,
    VQModel,
)
from transformers import (
    CLIPImageProcessor,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from generation.tiny.stable_diffusion import TEXT_HIDDEN, text_config, tiny_tokenizer

EMBEDDING = TEXT_HIDDEN  # the CLIP image embedding the prior makes and the decoder reads
IMAGE_SIZE = 32  # the tiny CLIP vision tower's input (the real one: 224)
PRIOR_DIR, INPAINT_DIR = "prior", "inpaint_decoder"


def for_inference(pipe: DiffusionPipeline) -> DiffusionPipeline:
    """The pipeline with its modules in eval mode, as from_pretrained leaves them (train mode picks other kernels
    and rounds differently: a pipeline built in memory would not match the copy it saves)."""
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    return pipe


def tiny_prior(embedding_dim: int = EMBEDDING) -> PriorTransformer:
    """A one-layer unCLIP prior whose output depends on the prompt (see the module docstring)."""
    prior = PriorTransformer(
        num_attention_heads=2,
        attention_head_dim=12,
        embedding_dim=embedding_dim,
        num_layers=1,
    )
    with torch.no_grad():
        prior.clip_std.fill_(1.0)
        prior.clip_mean.normal_(std=0.1)
        prior.positional_embedding.normal_(std=0.02)
        prior.prd_embedding.normal_(std=0.02)
    return prior


def prior_scheduler(clip_sample_range: float = 10.0) -> UnCLIPScheduler:
    """The prior's sampler as Kandinsky 2.2 (range 10) and Karlo (range 5) ship it: it predicts the embedding."""
    return UnCLIPScheduler(
        variance_type="fixed_small_log",
        prediction_type="sample",
        num_train_timesteps=1000,
        clip_sample_range=clip_sample_range,
    )


def build_tiny_kandinsky_prior(embedding_dim: int = EMBEDDING) -> KandinskyV22PriorPipeline:
    """CLIP text and vision towers with projections, and the prior between them."""
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    text = text_config(tokenizer, projection_dim=embedding_dim)
    text.hidden_size = embedding_dim  # the prior projects the text states from its own embedding width
    vision = CLIPVisionConfig(
        hidden_size=embedding_dim,
        image_size=IMAGE_SIZE,
        patch_size=8,
        projection_dim=embedding_dim,
        intermediate_size=37,
        num_attention_heads=4,
        num_channels=3,
        num_hidden_layers=1,
    )
    processor = CLIPImageProcessor(
        crop_size=IMAGE_SIZE,
        size=IMAGE_SIZE,
        do_center_crop=True,
        do_normalize=True,
        do_resize=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
        resample=3,
    )
    pipe = KandinskyV22PriorPipeline(
        prior=tiny_prior(embedding_dim),
        image_encoder=CLIPVisionModelWithProjection(vision),
        text_encoder=CLIPTextModelWithProjection(text),
        tokenizer=tokenizer,
        scheduler=prior_scheduler(),
        image_processor=processor,
    )
    return for_inference(pipe)


def tiny_movq() -> VQModel:
    """MoVQ's shape (spatial norm, attention at the lowest level) with 8x downsampling, as the real one."""
    return VQModel(
        block_out_channels=(32, 32, 32, 32),  # SpatialNorm's GroupNorm has 32 groups
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
        up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"),
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        norm_type="spatial",
        num_vq_embeddings=12,
        vq_embed_dim=4,
    )


def _decoder_unet(in_channels: int, embedding_dim: int) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        in_channels=in_channels,
        out_channels=8,  # the noise and its learned variance
        addition_embed_type="image",
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=(16, 32),
        norm_num_groups=8,
        layers_per_block=1,
        encoder_hid_dim=embedding_dim,
        encoder_hid_dim_type="image_proj",
        cross_attention_dim=32,
        attention_head_dim=4,
        resnet_time_scale_shift="scale_shift",
        class_embed_type=None,
    )


def decoder_scheduler() -> DDPMScheduler:
    """A DDPM sampler with Kandinsky 2.2's schedule (it draws fresh noise every step: seeds matter throughout)."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        steps_offset=1,
        prediction_type="epsilon",
    )


def build_tiny_kandinsky_decoder(embedding_dim: int = EMBEDDING) -> KandinskyV22Pipeline:
    """The text-to-image (and image-to-image) decoder: UNet on MoVQ latents, conditioned on the image embedding."""
    torch.manual_seed(0)
    pipe = KandinskyV22Pipeline(unet=_decoder_unet(4, embedding_dim), scheduler=decoder_scheduler(), movq=tiny_movq())
    return for_inference(pipe)


def build_tiny_kandinsky_inpaint(embedding_dim: int = EMBEDDING) -> KandinskyV22InpaintPipeline:
    """The inpainting decoder: its UNet also reads the masked picture's latents and the mask (4 + 4 + 1)."""
    torch.manual_seed(1)
    pipe = KandinskyV22InpaintPipeline(
        unet=_decoder_unet(9, embedding_dim), scheduler=decoder_scheduler(), movq=tiny_movq()
    )
    return for_inference(pipe)


def write_tiny_kandinsky(directory: Path) -> None:
    """Write the three parts where the family looks for them: `DIR`, `DIR/prior`, `DIR/inpaint_decoder`."""
    directory = Path(directory)
    build_tiny_kandinsky_decoder().save_pretrained(directory)
    build_tiny_kandinsky_prior().save_pretrained(directory / PRIOR_DIR)
    build_tiny_kandinsky_inpaint().save_pretrained(directory / INPAINT_DIR)
