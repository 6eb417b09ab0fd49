"""The one interface every model family implements for the RL algorithms.

An adapter owns a denoiser that predicts rectified-flow velocity in some
latent space (pixels for the shapes model, VAE latents for SD3), the prompt
encoder, and the decoder to images. The algorithms only ever call:

    encode_prompts -> PromptEmbeddings  (cached per prompt)
    velocity(z, t, embeddings)          (x0 = z - t v follows)
    sample(embeddings, noise, ...)      any registered ODE solver, no grad
    decode(latents) -> uint8 images     for the rewards, in chunks
    add_lora / lora_parameters / save_lora / load_lora / lora_merged / lora_disabled

A family implements `_encode_prompts`, `velocity` and `_decode`, and names its text encoders and image
decoder, which `MemoryOptions.offload` keeps off the GPU between uses.
"""

from __future__ import annotations

import contextlib
import json
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer_core import lora
from trainer_core.model_zoo import use_safetensors
from trainer_core.samplers import VelocityFn, solve


@dataclass
class PromptEmbeddings:
    """Per-prompt conditioning tensors, batch first. `extra` holds family-specific tensors."""

    states: torch.Tensor  # [B, L, D]
    pooled: torch.Tensor | None = None  # [B, D']
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.states.shape[0]

    def map(self, fn) -> PromptEmbeddings:
        return PromptEmbeddings(
            fn(self.states),
            None if self.pooled is None else fn(self.pooled),
            {k: fn(v) for k, v in self.extra.items()},
        )

    def repeat_interleave(self, n: int) -> PromptEmbeddings:
        """Each prompt's embedding n times in a row: one group of n images per prompt."""
        return self.map(lambda x: x.repeat_interleave(n, dim=0))

    def __getitem__(self, index: slice | torch.Tensor) -> PromptEmbeddings:
        return self.map(lambda x: x[index])

    @staticmethod
    def cat(parts: list[PromptEmbeddings]) -> PromptEmbeddings:
        first = parts[0]
        return PromptEmbeddings(
            torch.cat([p.states for p in parts]),
            None if first.pooled is None else torch.cat([p.pooled for p in parts]),  # type: ignore[misc]
            {k: torch.cat([p.extra[k] for p in parts]) for k in first.extra},
        )


@dataclass(frozen=True)
class MemoryOptions:
    """What trades time for memory at real sizes (each family's defaults: `ModelFamily.memory`).

    gradient_checkpointing: recompute the denoiser's activations in the backward pass instead of keeping them.
    offload: keep the text encoders and the image decoder in CPU memory, on the GPU only while they run.
    decode_batch: latents decoded to images at once; 0 decodes a whole batch at once.
    prompt_cache: prompts whose embeddings are kept (in CPU memory), so each is encoded once; 0 keeps none.
    """

    gradient_checkpointing: bool = False
    offload: bool = False
    decode_batch: int = 0
    prompt_cache: int = 0

    def __post_init__(self) -> None:
        if self.decode_batch < 0 or self.prompt_cache < 0:
            raise ValueError(f"decode_batch, prompt_cache: must be >= 0, got {self.decode_batch}, {self.prompt_cache}")


def weight_dtype(device: torch.device) -> torch.dtype:
    """What a family's frozen weights are loaded in: bf16 on a GPU, fp32 on a CPU (LoRA trains in fp32)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_pipeline(pipeline: str, path: Path, device: torch.device, optional: tuple[str, ...] = (), **fixed: Any):
    """The diffusers `pipeline` in the local directory `path`, in the device's weight dtype, progress bars off.

    `optional` components that the directory leaves out (T5, an IP-adapter's image encoder) load as None;
    `fixed` components are set as given (SD1.5's safety checker: none)."""
    import diffusers

    index = json.loads((Path(path) / "model_index.json").read_text())
    absent = {name: None for name in optional if index.get(name) in (None, [None, None])}
    cls = getattr(diffusers, pipeline)
    pipe = cls.from_pretrained(
        path, dtype=weight_dtype(device), local_files_only=True, use_safetensors=use_safetensors(), **absent, **fixed
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def vae_decode(vae: torch.nn.Module, latents: torch.Tensor) -> np.ndarray:
    """uint8 images [B, H, W, 3] from latents in the denoiser's scaled (and shifted) VAE space."""
    config = vae.config  # type: ignore[attr-defined]
    scaled = latents.to(vae.dtype) / config.scaling_factor + (getattr(config, "shift_factor", None) or 0.0)
    return to_uint8(vae.decode(scaled).sample)  # type: ignore[operator]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] in [-1, 1] to uint8 [B, H, W, 3]."""
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


class DenoiserAdapter(ABC):
    """A text-to-image flow model as the RL algorithms see it."""

    #: the trainable module that LoRA adapts
    denoiser: torch.nn.Module
    #: SD3-style time shift of the sampling grid
    time_shift: float = 1.0
    #: whether rollouts need classifier-free guidance by default
    default_guidance: float = 1.0
    lora_spec: lora.LoraSpec | None = None
    memory: MemoryOptions = MemoryOptions()
    #: the denoiser's weights are sharded across processes (`trainer_core.distributed.shard`)
    sharded: bool = False

    @property
    @abstractmethod
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one sample in the space where the flow runs."""

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.denoiser.parameters()).dtype

    @abstractmethod
    def _encode_prompts(self, prompts: list[str]) -> PromptEmbeddings:
        """Conditioning for a batch of prompts, computed (no grad: text encoders stay frozen)."""

    @abstractmethod
    def velocity(self, z: torch.Tensor, t: torch.Tensor, embeddings: PromptEmbeddings) -> torch.Tensor:
        """v_theta(z_t, t, c) for z [B, C, H, W], t [B] in [0, 1] (1 = noise)."""

    @abstractmethod
    def _decode(self, latents: torch.Tensor) -> np.ndarray:
        """uint8 images [B, H, W, 3] from latents [B, C, H, W], in one pass."""

    def text_encoders(self) -> list[torch.nn.Module]:
        """The modules `_encode_prompts` runs."""
        return []

    def image_decoders(self) -> list[torch.nn.Module]:
        """The modules `_decode` runs."""
        return []

    # --- memory ------------------------------------------------------------------------------

    def configure_memory(self, options: MemoryOptions) -> None:
        self.memory = options
        self.__dict__.pop("_prompt_cache", None)
        if options.gradient_checkpointing:
            self.denoiser.enable_gradient_checkpointing()  # type: ignore[operator]
        if options.offload and self.device.type != "cpu":
            for module in (*self.text_encoders(), *self.image_decoders()):
                module.to("cpu")

    @contextlib.contextmanager
    def _on_device(self, modules: list[torch.nn.Module]) -> Iterator[None]:
        """`modules` on the denoiser's device for the duration, when they are offloaded."""
        moving = self.memory.offload and self.device.type != "cpu"
        for module in modules if moving else []:
            module.to(self.device)
        try:
            yield
        finally:
            for module in modules if moving else []:
                module.to("cpu")

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> PromptEmbeddings:
        """Conditioning for a batch of prompts; with a prompt cache each distinct prompt is encoded once."""
        size = self.memory.prompt_cache
        if not size:
            with self._on_device(self.text_encoders()):
                return self._encode_prompts(prompts)
        cache = self.__dict__.setdefault("_prompt_cache", OrderedDict())
        missing = [p for p in dict.fromkeys(prompts) if p not in cache]
        if missing:
            with self._on_device(self.text_encoders()):
                fresh = self._encode_prompts(missing)
            for i, prompt in enumerate(missing):
                cache[prompt] = fresh[i : i + 1].map(lambda x: x.to("cpu"))
        for prompt in prompts:
            cache.move_to_end(prompt)
        embeddings = PromptEmbeddings.cat([cache[p] for p in prompts]).map(lambda x: x.to(self.device))
        while len(cache) > size:
            cache.popitem(last=False)  # the least recently used
        return embeddings

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """uint8 images [B, H, W, 3] from latents [B, C, H, W], `memory.decode_batch` at a time."""
        size = self.memory.decode_batch or len(latents)
        with self._on_device(self.image_decoders()):
            return np.concatenate([self._decode(latents[i : i + size]) for i in range(0, len(latents), size)])

    def predict_x0(self, z: torch.Tensor, t: torch.Tensor, embeddings: PromptEmbeddings) -> torch.Tensor:
        return z - t.view(-1, *([1] * (z.dim() - 1))) * self.velocity(z, t, embeddings)

    def guided_velocity(
        self, embeddings: PromptEmbeddings, guidance_scale: float = 1.0, null_embeddings: PromptEmbeddings | None = None
    ) -> VelocityFn:
        """(z, t) -> velocity for these prompts, with classifier-free guidance when guidance_scale != 1.

        `null_embeddings` is the empty prompt's embedding (batch 1); encoded here if not given.
        """
        if guidance_scale == 1.0:
            return lambda z, t: self.velocity(z, t, embeddings)
        null = null_embeddings if null_embeddings is not None else self.encode_prompts([""])
        null = null.map(lambda x: x[:1].expand(len(embeddings), *x.shape[1:]))
        both = PromptEmbeddings.cat([null, embeddings])

        def guided(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            v_null, v_cond = self.velocity(torch.cat([z, z]), torch.cat([t, t]), both).chunk(2)
            return v_null + guidance_scale * (v_cond - v_null)

        return guided

    @torch.no_grad()
    def sample(
        self,
        embeddings: PromptEmbeddings,
        noise: torch.Tensor,
        steps: int,
        solver: str = "heun",
        guidance_scale: float = 1.0,
        null_embeddings: PromptEmbeddings | None = None,
    ) -> torch.Tensor:
        """Latents [B, C, H, W] at t = 0 from noise at t = 1, deterministic."""
        velocity = self.guided_velocity(embeddings, guidance_scale, null_embeddings)
        with self.lora_merged():
            return solve(velocity, noise, steps, solver, self.time_shift)

    def noise(self, seeds: list[int]) -> torch.Tensor:
        """Standard normal latents [B, C, H, W], one per seed, independent of the batch."""
        return torch.stack(
            [torch.randn(self.latent_shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
        ).to(self.device, self.dtype)

    # --- LoRA ------------------------------------------------------------------------------

    def add_lora(self, spec: lora.LoraSpec) -> None:
        """Freeze the base weights and add a trainable adapter to the denoiser."""
        self.denoiser.requires_grad_(False)
        lora.add_lora(self.denoiser, spec)
        for param in self.lora_parameters():
            param.data = param.data.float()  # adapters train in fp32 even on a bf16 base
        self.lora_spec = spec

    def lora_parameters(self) -> list[torch.nn.Parameter]:
        return [p for n, p in self.denoiser.named_parameters() if "lora_" in n and p.requires_grad]

    def save_lora(self, path: Path, metadata: dict[str, str] | None = None, write: bool = True) -> None:
        """Write the adapter to `path`; a sharded one is gathered by every rank, written by those told to."""
        if self.lora_spec is None:
            raise RuntimeError("save_lora: this model has no LoRA adapter")
        lora.save_lora(self.denoiser, self.lora_spec, path, metadata, write)

    def load_lora(self, path: Path) -> None:
        """Load an adapter file: into the existing adapter if there is one, else as a new one."""
        if self.lora_spec is None:
            self.denoiser.requires_grad_(False)
            self.lora_spec = lora.load_lora(self.denoiser, path)
        else:
            lora.load_lora_weights(self.denoiser, path)

    @contextlib.contextmanager
    def lora_merged(self) -> Iterator[None]:
        """The adapter folded into the base weights where that gives the same numbers: fp32 weights, no
        autocast, no LoRA dropout. Without gradients the weights are merged in place; with them each
        adapted layer folds at every call and computes its LoRA gradients by hand (`lora.fused_lora`).
        Elsewhere (bf16, where a small update would round away, or dropout) the adapter stays apart."""
        fold = (
            self.lora_spec is not None
            and not self.sharded  # a rank holds a shard of each weight: nothing whole to fold into
            and self.lora_spec.dropout == 0
            and self.dtype == torch.float32
            and not torch.is_autocast_enabled(self.device.type)
        )
        if not fold:
            folded: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        elif torch.is_grad_enabled():
            # a checkpointed layer's recomputation in backward runs outside this context, unfused, and
            # must save the same tensors as its forward: fold only when nothing is recomputed
            recomputed = self.memory.gradient_checkpointing
            folded = contextlib.nullcontext() if recomputed else lora.fused_lora(self.denoiser)
        else:
            folded = lora.merged_lora(self.denoiser)
        with folded:
            yield

    @contextlib.contextmanager
    def lora_disabled(self) -> Iterator[None]:
        """The base model, for reference passes (Flow-GRPO's KL)."""
        if self.lora_spec is None:
            yield
            return
        self.denoiser.disable_adapters()
        try:
            yield
        finally:
            self.denoiser.enable_adapters()
