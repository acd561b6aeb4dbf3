"""Stable Diffusion 1.5 and SDXL with random weights at their real sizes (or scaled down for CPU runs).

The configs follow the published checkpoints (runwayml SD 1.5, stabilityai/stable-diffusion-xl-base-1.0);
only the weights are random, so kernels, shapes and memory behave as with the real models. The tokenizer
is the byte-level one from generation.tiny: it only produces small ids, which a 49408-row embedding takes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.utils.flop_counter
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.models.attention_processor import AttnProcessor
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from generation.tiny import tiny_tokenizer

CLIP_VOCAB = 49408
TEXT_TOKENS = 77
M = TypeVar("M", bound=torch.nn.Module)

_SD15_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
_SD15_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
_SDXL_DOWN = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
_SDXL_UP = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")


@dataclass(frozen=True)
class Architecture:
    """The sizes of every module of both pipelines; the block layout is always SD 1.5's / SDXL's."""

    name: str
    sd_unet: dict[str, Any]
    sd_text: dict[str, Any]  # CLIP-L (SD 1.5's encoder, and SDXL's first)
    vae: dict[str, Any]
    sdxl_unet: dict[str, Any]
    sdxl_text_2: dict[str, Any]  # OpenCLIP bigG with projection
    taesd: dict[str, Any] = field(default_factory=dict)  # AutoencoderTiny defaults = TAESD

    @property
    def sdxl_cross_attention_dim(self) -> int:
        """SDXL's UNet attends to both text encoders' hidden states, concatenated."""
        return self.sd_text["hidden_size"] + self.sdxl_text_2["hidden_size"]


FULL = Architecture(
    name="full size",
    sd_unet=dict(
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        cross_attention_dim=768,
        attention_head_dim=8,
        norm_num_groups=32,
        sample_size=64,
    ),
    sd_text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
    vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32),
    sdxl_unet=dict(
        block_out_channels=(320, 640, 1280),
        layers_per_block=2,
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),  # diffusers reads these as head counts (64-wide heads)
        addition_time_embed_dim=256,
        norm_num_groups=32,
        sample_size=128,
    ),
    sdxl_text_2=dict(
        hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20, projection_dim=1280
    ),
)

REDUCED = Architecture(
    name="reduced size (CPU)",
    sd_unet=dict(
        block_out_channels=(32, 64, 128, 128),
        layers_per_block=1,
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=32,
        sample_size=16,
    ),
    sd_text=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2),
    vae=dict(block_out_channels=(32, 32, 64, 64), layers_per_block=1, norm_num_groups=32),
    sdxl_unet=dict(
        block_out_channels=(32, 64, 128),
        layers_per_block=1,
        transformer_layers_per_block=(1, 1, 2),
        attention_head_dim=(1, 2, 4),
        addition_time_embed_dim=8,
        norm_num_groups=32,
        sample_size=16,
    ),
    sdxl_text_2=dict(
        hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, projection_dim=64
    ),
    # Narrower than TAESD so that, as at full size, it stays far smaller than the (reduced) VAE.
    taesd=dict(encoder_block_out_channels=(16,) * 4, decoder_block_out_channels=(16,) * 4),
)


def build_on(device: torch.device | str, dtype: torch.dtype, factory: Callable[[], M]) -> M:
    """Construct a module directly on a device (no CPU copy), then cast it; eval mode, no grads."""
    with torch.device(device):
        module = factory()
    return module.to(dtype=dtype).eval().requires_grad_(False)


def _text_config(tokenizer: CLIPTokenizer, sizes: dict[str, Any], hidden_act: str) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=CLIP_VOCAB,
        max_position_embeddings=TEXT_TOKENS,
        hidden_act=hidden_act,
        projection_dim=sizes.get("projection_dim", sizes["hidden_size"]),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **{k: v for k, v in sizes.items() if k != "projection_dim"},
    )


def sd15_unet(arch: Architecture) -> UNet2DConditionModel:
    """SD 1.5's UNet (859.5M parameters at full size)."""
    return UNet2DConditionModel(down_block_types=_SD15_DOWN, up_block_types=_SD15_UP, **arch.sd_unet)


def sdxl_unet(arch: Architecture) -> UNet2DConditionModel:
    """SDXL base's UNet (2.567B parameters at full size) with its text_time micro-conditioning."""
    sizes = dict(arch.sdxl_unet)
    time_dim = sizes.pop("addition_time_embed_dim")
    return UNet2DConditionModel(
        down_block_types=_SDXL_DOWN,
        up_block_types=_SDXL_UP,
        cross_attention_dim=arch.sdxl_cross_attention_dim,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        # six time ids (original size, crop, target size) plus the pooled bigG embedding
        projection_class_embeddings_input_dim=6 * time_dim + arch.sdxl_text_2["projection_dim"],
        **sizes,
    )


def vae(arch: Architecture, scaling_factor: float, sample_size: int) -> AutoencoderKL:
    """The KL autoencoder SD 1.5 and SDXL share (83.7M parameters at full size)."""
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        scaling_factor=scaling_factor,
        sample_size=sample_size,
        **arch.vae,
    )


def taesd(arch: Architecture) -> AutoencoderTiny:
    """A TAESD-shaped AutoencoderTiny (diffusers' defaults are TAESD's architecture)."""
    return AutoencoderTiny(**arch.taesd)


def build_sd15(arch: Architecture, device: torch.device | str, dtype: torch.dtype) -> StableDiffusionPipeline:
    """SD 1.5 with random weights, built on the device; scheduler is the checkpoint's PNDM."""
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    pipe = StableDiffusionPipeline(
        unet=build_on(device, dtype, lambda: sd15_unet(arch)),
        vae=build_on(device, dtype, lambda: vae(arch, 0.18215, 512)),
        text_encoder=build_on(
            device, dtype, lambda: CLIPTextModel(_text_config(tokenizer, arch.sd_text, "quick_gelu"))
        ),
        tokenizer=tokenizer,
        scheduler=PNDMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            skip_prk_steps=True,
            steps_offset=1,
            set_alpha_to_one=False,
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_sdxl(arch: Architecture, device: torch.device | str, dtype: torch.dtype) -> StableDiffusionXLPipeline:
    """SDXL base with random weights, built on the device; scheduler and VAE config as the checkpoint's."""
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    pipe = StableDiffusionXLPipeline(
        unet=build_on(device, dtype, lambda: sdxl_unet(arch)),
        # force_upcast stays True as in the checkpoint's config: the stock SDXL VAE decodes in fp32.
        vae=build_on(device, dtype, lambda: vae(arch, 0.13025, 1024)),
        text_encoder=build_on(
            device, dtype, lambda: CLIPTextModel(_text_config(tokenizer, arch.sd_text, "quick_gelu"))
        ),
        text_encoder_2=build_on(
            device, dtype, lambda: CLIPTextModelWithProjection(_text_config(tokenizer, arch.sdxl_text_2, "gelu"))
        ),
        tokenizer=tokenizer,
        tokenizer_2=tiny_tokenizer(),
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            timestep_spacing="leading",
            steps_offset=1,
        ),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def parameter_counts(pipe: Any) -> dict[str, int]:
    """Parameters of each torch module of a pipeline, by component name."""
    return {
        name: sum(p.numel() for p in module.parameters())
        for name, module in pipe.components.items()
        if isinstance(module, torch.nn.Module)
    }


def meta_parameter_counts(arch: Architecture) -> dict[str, int]:
    """Parameter counts of every model, built on the meta device (no memory, any machine)."""
    tokenizer = tiny_tokenizer()
    factories: dict[str, Callable[[], torch.nn.Module]] = {
        "SD1.5 unet": lambda: sd15_unet(arch),
        "SD1.5 vae": lambda: vae(arch, 0.18215, 512),
        "SD1.5 text_encoder (CLIP-L)": lambda: CLIPTextModel(_text_config(tokenizer, arch.sd_text, "quick_gelu")),
        "SDXL unet": lambda: sdxl_unet(arch),
        "SDXL text_encoder_2 (bigG)": lambda: CLIPTextModelWithProjection(
            _text_config(tokenizer, arch.sdxl_text_2, "gelu")
        ),
        "TAESD (AutoencoderTiny)": lambda: taesd(arch),
    }
    counts = {}
    for name, factory in factories.items():
        with torch.device("meta"):
            counts[name] = sum(p.numel() for p in factory().parameters())
    return counts


def unet_flops_per_image_step(unet: UNet2DConditionModel, latent_side: int, cfg: bool = True) -> float:
    """Forward FLOPs of one image's UNet call (two rows with CFG), counted on a meta-device copy."""
    with torch.device("meta"):
        twin = UNet2DConditionModel.from_config(unet.config)
    # The classic processor is plain bmm/softmax, which the counter knows; SDPA kernels vary by backend.
    twin.set_attn_processor(AttnProcessor())
    rows = 2 if cfg else 1
    config = unet.config
    kwargs: dict[str, Any] = {}
    if config.addition_embed_type == "text_time":
        pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.zeros(rows, pooled, device="meta"),
            "time_ids": torch.zeros(rows, 6, device="meta"),
        }
    sample = torch.zeros(rows, config.in_channels, latent_side, latent_side, device="meta")
    hidden = torch.zeros(rows, TEXT_TOKENS, config.cross_attention_dim, device="meta")
    timestep = torch.zeros(rows, device="meta")
    counter = torch.utils.flop_counter.FlopCounterMode(display=False)
    with counter, torch.no_grad():
        twin(sample, timestep, encoder_hidden_states=hidden, **kwargs)
    return float(counter.get_total_flops())
