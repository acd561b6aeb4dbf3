"""Dreambooth LoRA fine-tuning of a resident SD or SDXL pipeline, in resumable chunks.

Follows diffusers' examples/dreambooth/train_dreambooth_lora.py (and its SDXL sibling): LoRA on the UNet's
attention projections; VAE latents x scaling factor; DDPM noise at random timesteps; MSE against the
scheduler's target; AdamW. The adapter is attached only while a chunk runs, so between chunks the same
pipeline serves /imagine exactly as before. Every random draw comes from the trainer's own generator (saved
in checkpoints), so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from PIL import Image

from generation.atomic import write_atomic
from generation.errors import InvalidRequest
from generation.training_inputs import TrainingSettings, check_photo_count, fit_photo, photo_digest

ADAPTER = "imagine-bot-training"
TARGET_MODULES = ["to_k", "to_q", "to_v", "to_out.0"]
CHECKPOINT_FORMAT = "imagine-bot/dreambooth-lora/1"

StepCallback = Callable[[int, int, float], None]  # (step done, total steps, loss of that step)
CancelCheck = Callable[[], bool]


@dataclass(frozen=True)
class ChunkResult:
    """Where training stands after a chunk: steps done, the chunk's mean loss (None if no step ran)."""

    step: int
    total: int
    loss: float | None
    cancelled: bool = False

    @property
    def done(self) -> bool:
        """Whether every step has run."""
        return self.step >= self.total


@contextmanager
def _normal_tensors_without_grad() -> Iterator[None]:
    # Cached tensors made under a caller's inference_mode could not take part in backward later.
    with torch.inference_mode(False), torch.no_grad():
        yield


@contextmanager
def _adapters_switched(module: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Every PEFT layer already in `module` on (or off) for the block; then each layer's switch and every
    parameter's requires_grad back as they were (served LoRAs may be loaded, and `disable_lora()`-ed)."""
    layers = [m for m in module.modules() if isinstance(m, BaseTunerLayer)]
    switches = [layer.disable_adapters for layer in layers]
    flags = {param: param.requires_grad for param in module.parameters()}
    for layer in layers:
        layer.enable_adapters(enabled)
    try:
        yield
    finally:
        for layer, disabled in zip(layers, switches, strict=True):
            layer.enable_adapters(not disabled)
        for param, flag in flags.items():
            param.requires_grad_(flag)


class LoraTrainer:
    """Trains a Dreambooth LoRA on `pipe.unet`, a chunk at a time. Not thread-safe: use the GPU thread."""

    def __init__(
        self,
        pipe: DiffusionPipeline,
        photos: Sequence[Image.Image],
        settings: TrainingSettings,
        class_photos: Sequence[Image.Image] = (),
    ) -> None:
        check_photo_count(len(photos))
        self.pipe = pipe
        self.settings = settings
        unet = pipe.unet
        self._sdxl = getattr(unet.config, "addition_embed_type", None) == "text_time"
        self._device, self._dtype = unet.device, unet.dtype
        # Noise is added as in DDPM training, with the betas of whatever scheduler the pipeline samples with.
        self._noise = DDPMScheduler.from_config(pipe.scheduler.config)
        self._prediction = self._noise.config.prediction_type
        if self._prediction not in ("epsilon", "v_prediction"):
            raise InvalidRequest(f"Training supports epsilon and v-prediction models, not {self._prediction!r}.")
        photos = [fit_photo(p, settings.resolution) for p in photos]
        class_photos = [fit_photo(p, settings.resolution) for p in class_photos]
        self.fingerprint = hashlib.sha256(
            repr(sorted(asdict(settings).items())).encode()
            + photo_digest(photos).encode()
            + photo_digest(class_photos).encode()
        ).hexdigest()
        with _normal_tensors_without_grad(), ExitStack() as stack:
            # Prompts are encoded by the base text encoders, whatever served LoRA is active on them now.
            for encoder in (getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)):
                if encoder is not None:
                    stack.enter_context(_adapters_switched(encoder, False))
            self._instance = self._latent_stats(photos)
            self._instance_text = self._encode_prompt(settings.instance_prompt)
            self._class = self._latent_stats(class_photos) if class_photos else None
            self._class_text = self._encode_prompt(settings.class_prompt) if class_photos else None
        self.step = 0
        self._lora: dict[str, torch.Tensor] | None = None
        self._optimizer_state: dict[str, Any] | None = None
        self._scaler_state: dict[str, Any] | None = None
        self._generator = torch.Generator("cpu").manual_seed(settings.seed)

    @property
    def total(self) -> int:
        """Steps the whole training takes."""
        return self.settings.steps

    # --- preparation ----------------------------------------------------------------------------

    def _latent_stats(self, photos: Sequence[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        # Encode once and keep the posterior's mean and std: sampling it each step equals
        # `vae.encode(x).latent_dist.sample()` without running the encoder every step.
        vae = self.pipe.vae
        served_dtype = vae.dtype
        # SDXL's VAE overflows in fp16 (its config says force_upcast): encode in fp32, as the pipelines decode.
        upcast = served_dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
        if upcast:
            vae.to(torch.float32)
        means, stds = [], []
        try:
            for photo in photos:
                pixels = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
                dist = vae.encode(pixels.to(self._device, vae.dtype)).latent_dist
                means.append(dist.mean.float())
                stds.append(dist.std.float())
        finally:
            if upcast:
                vae.to(served_dtype)
        return torch.cat(means), torch.cat(stds)

    def _encode_prompt(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        common = {"prompt": prompt, "device": self._device, "num_images_per_prompt": 1}
        if self._sdxl:
            embeds, _, pooled, _ = self.pipe.encode_prompt(**common, do_classifier_free_guidance=False)
            return embeds, pooled
        embeds, _ = self.pipe.encode_prompt(**common, do_classifier_free_guidance=False)
        return embeds, None

    # --- training -------------------------------------------------------------------------------

    def run_chunk(
        self, steps: int, on_step: StepCallback | None = None, should_cancel: CancelCheck | None = None
    ) -> ChunkResult:
        """Run up to `steps` training steps; on an error the trainer stays at the previous chunk's state."""
        todo = min(steps, self.total - self.step)
        if todo <= 0:
            return ChunkResult(self.step, self.total, None)
        start_step, start_rng = self.step, self._generator.get_state()
        losses: list[float] = []
        cancelled = False
        try:
            # Grad on even when the GPU thread calls from inside no_grad/inference_mode; restored on exit.
            with torch.inference_mode(False), torch.enable_grad(), self._attached() as (params, optimizer, scaler):
                for _ in range(todo):
                    if should_cancel is not None and should_cancel():
                        cancelled = True
                        break
                    loss = self._train_step(params, optimizer, scaler)
                    self.step += 1
                    losses.append(loss)
                    if on_step is not None:
                        on_step(self.step, self.total, loss)
        except BaseException:
            self.step = start_step
            self._generator.set_state(start_rng)
            raise
        return ChunkResult(self.step, self.total, sum(losses) / len(losses) if losses else None, cancelled)

    @contextmanager
    def _attached(self) -> Iterator[tuple[list[torch.nn.Parameter], torch.optim.Optimizer, torch.amp.GradScaler]]:
        """The LoRA on the UNet with its optimiser, for one chunk; afterwards the UNet is as it was."""
        unet = self.pipe.unet
        was_training = unet.training
        others = list(unet.active_adapters()) if getattr(unet, "_hf_peft_config_loaded", False) else None
        # Served LoRAs' layers switched on while we train: a `disable_lora()` would silence ours too.
        with _adapters_switched(unet, True):
            unet.requires_grad_(False)
            # Gaussian init draws from the global RNG: fork it so serving's random state is left untouched.
            cuda = [self._device.index or 0] if self._device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(self.settings.seed)
                config = LoraConfig(
                    r=self.settings.rank,
                    lora_alpha=self.settings.rank,
                    init_lora_weights="gaussian",
                    target_modules=TARGET_MODULES,
                )
                unet.add_adapter(config, adapter_name=ADAPTER)  # and makes it the only active adapter
            try:
                params, optimizer, scaler = self._optimiser_for(unet)
                yield params, optimizer, scaler
                state = get_peft_model_state_dict(unet, adapter_name=ADAPTER)
                self._lora = {key: value.detach().clone() for key, value in state.items()}
                self._optimizer_state = optimizer.state_dict()
                self._scaler_state = scaler.state_dict()
            finally:
                if others is None:
                    unet.unload_lora()  # ours was the only adapter: take the PEFT layers out altogether
                else:
                    if others:
                        unet.set_adapter(others)  # first, so PEFT does not warn about deleting the active one
                    unet.delete_adapters(ADAPTER)
                unet.train(was_training)

    def _optimiser_for(
        self, unet: torch.nn.Module
    ) -> tuple[list[torch.nn.Parameter], torch.optim.Optimizer, torch.amp.GradScaler]:
        params = [p for name, p in unet.named_parameters() if f".{ADAPTER}." in name]
        for param in params:
            # fp32 master weights even on an fp16 UNet (diffusers' cast_training_params).
            param.data = param.data.float()
            param.requires_grad_(True)
        if self._lora is not None:
            set_peft_model_state_dict(unet, self._lora, adapter_name=ADAPTER)
        optimizer = torch.optim.AdamW(
            params,
            lr=self.settings.learning_rate,
            betas=(0.9, 0.999),
            weight_decay=self.settings.weight_decay,
            eps=1e-8,
        )
        if self._optimizer_state is not None:
            # A copy: AdamW would otherwise update the kept tensors in place, and a failed chunk must
            # leave the state of the last good one.
            optimizer.load_state_dict(_copy(self._optimizer_state))
        # fp16 gradients underflow without loss scaling; disabled it is a pass-through.
        scaler = torch.amp.GradScaler(self._device.type, enabled=self._dtype == torch.float16)
        if self._scaler_state:
            scaler.load_state_dict(self._scaler_state)
        unet.train()
        return params, optimizer, scaler

    def _indices(self, step: int, count: int, salt: int) -> list[int]:
        # Epoch-wise shuffles from (seed, epoch) alone, so resuming needs no sampler state.
        size = self.settings.batch_size
        picked = []
        for k in range(step * size, (step + 1) * size):
            epoch, position = divmod(k, count)
            order = torch.Generator("cpu").manual_seed(self.settings.seed * 1_000_003 + salt * 7919 + epoch)
            picked.append(int(torch.randperm(count, generator=order)[position]))
        return picked

    def _sample(self, stats: tuple[torch.Tensor, torch.Tensor], indices: list[int]) -> torch.Tensor:
        mean, std = stats[0][indices], stats[1][indices]
        # Drawn on the CPU generator so the stream (and checkpoints) do not depend on the device.
        eps = torch.randn(mean.shape, generator=self._generator).to(self._device)
        return (mean + std * eps) * self.pipe.vae.config.scaling_factor

    def _train_step(
        self, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler
    ) -> float:
        settings = self.settings
        batch = settings.batch_size
        latents = self._sample(self._instance, self._indices(self.step, len(self._instance[0]), 0))
        embeds, pooled = (t.expand(batch, *t.shape[1:]) if t is not None else None for t in self._instance_text)
        if self._class is not None and self._class_text is not None:
            # Instance and class examples in one forward pass, split again for the two losses.
            latents = torch.cat([latents, self._sample(self._class, self._indices(self.step, len(self._class[0]), 1))])
            class_embeds, class_pooled = self._class_text
            embeds = torch.cat([embeds, class_embeds.expand(batch, *class_embeds.shape[1:])])
            if pooled is not None and class_pooled is not None:
                pooled = torch.cat([pooled, class_pooled.expand(batch, *class_pooled.shape[1:])])
        noise = torch.randn(latents.shape, generator=self._generator).to(self._device)
        timesteps = torch.randint(
            0, self._noise.config.num_train_timesteps, (len(latents),), generator=self._generator
        ).to(self._device)
        noisy = self._noise.add_noise(latents, noise, timesteps)
        extra: dict[str, Any] = {}
        if self._sdxl:
            # Micro-conditioning as at inference by default: the photos are already square crops.
            side = settings.resolution
            time_ids = torch.tensor([[side, side, 0, 0, side, side]], device=self._device, dtype=self._dtype)
            extra["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids.expand(len(latents), 6)}
        prediction = self.pipe.unet(noisy.to(self._dtype), timesteps, embeds, return_dict=False, **extra)[0].float()
        target = noise if self._prediction == "epsilon" else self._noise.get_velocity(latents, noise, timesteps)
        if self._class is not None:
            prediction, prior_prediction = prediction.chunk(2)
            target, prior_target = target.chunk(2)
            loss = F.mse_loss(prediction, target) + settings.prior_loss_weight * F.mse_loss(
                prior_prediction, prior_target
            )
        else:
            loss = F.mse_loss(prediction, target)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        return float(loss.detach())

    # --- persistence ----------------------------------------------------------------------------

    def checkpoint(self, path: Path) -> None:
        """Write LoRA weights, optimiser and RNG state and the step to `path`, atomically."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "step": self.step,
            "lora": _copy(self._lora, "cpu"),
            "optimizer": _copy(self._optimizer_state, "cpu"),
            "scaler": self._scaler_state or {},
            "rng": self._generator.get_state(),
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_atomic(Path(path), buffer.getvalue())

    def resume(self, path: Path) -> int:
        """Continue from a checkpoint of this same training; returns the step it holds."""
        # weights_only: a checkpoint is plain tensors and numbers, so nothing in it can run code.
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a training checkpoint of this version ({state.get('format')!r}).")
        if state["fingerprint"] != self.fingerprint:
            raise ValueError(f"{path} belongs to a training with other photos or settings.")
        self.step = int(state["step"])
        self._lora = state["lora"]
        self._optimizer_state = state["optimizer"]
        self._scaler_state = state["scaler"] or None
        self._generator.set_state(state["rng"])
        return self.step

    def lora_state(self) -> dict[str, torch.Tensor]:
        """The trained LoRA weights in PEFT naming (a copy on the CPU)."""
        if self._lora is None:
            raise RuntimeError("No training step has run yet, so there is no LoRA to save.")
        return _copy(self._lora, "cpu")

    def save_lora(self, path: Path) -> Path:
        """Write the LoRA as a diffusers .safetensors that `pipe.load_lora_weights` loads; atomic."""
        path = Path(path)
        layers = convert_state_dict_to_diffusers(self.lora_state())
        saver = StableDiffusionXLPipeline if self._sdxl else StableDiffusionPipeline
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".lora-") as staging:
            saver.save_lora_weights(staging, unet_lora_layers=layers, weight_name=path.name, safe_serialization=True)
            write_atomic(path, (Path(staging) / path.name).read_bytes())
        return path


def _copy(value: Any, device: str | None = None) -> Any:
    """A deep copy of nested dicts/lists of tensors (optimiser and LoRA state), optionally moved."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(device).clone() if device else value.detach().clone()
    if isinstance(value, dict):
        return {key: _copy(item, device) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_copy(item, device) for item in value)
    return value
