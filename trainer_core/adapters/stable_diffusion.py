"""Adapter for Stable Diffusion 1.x / 2.x (`StableDiffusionPipeline`), epsilon- or v-prediction UNets.

These are variance-preserving diffusion models, not flows; the adapter presents them to V-GRPO as the
flow z_t = (1 - t) x + t eps, exactly:

- the flow time t and the model's timestep tau share a signal-to-noise ratio,
  alpha_tau / sigma_tau = (1 - t) / t, with alpha_tau^2 = alphas_cumprod[tau] (tau fractional,
  log-SNR interpolated between the scheduler's timesteps);
- the latents differ by a scale: z_model = alpha x + sigma eps = z_flow / sqrt((1 - t)^2 + t^2);
- the UNet's output gives eps_hat and x0_hat by the scheduler's own formulas (eps: x0 = (z - sigma eps) /
  alpha; v: x0 = alpha z - sigma v, eps = sigma z + alpha v), and the velocity is eps_hat - x0_hat,
  so that z_flow - t v = x0_hat, the model's own x0 prediction.

Outside the model's noise range (t above the last timestep's level, about 0.94 for SD1.5) the UNet is
asked at its last timestep, as diffusers' samplers start from pure noise there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trainer_core.adapters.base import DenoiserAdapter, MemoryOptions, PromptEmbeddings, load_pipeline, vae_decode
from trainer_core.adapters.family import ModelFamily, RolloutDefaults, kohya_unet_target


class NoiseLevels:
    """The map from flow time to a VP model's (fractional) timestep, from its `alphas_cumprod`."""

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        alphas_cumprod = alphas_cumprod.double()
        self.log_snr = torch.log(alphas_cumprod / (1 - alphas_cumprod))  # [T], decreasing in tau

    def timestep(self, t: torch.Tensor) -> torch.Tensor:
        """tau [B] with the SNR of flow time t [B], clamped to [0, T - 1]."""
        t = t.detach().double().clamp(1e-12, 1 - 1e-12).cpu()
        target = 2 * (torch.log1p(-t) - torch.log(t))  # log SNR of the flow at t
        steps = np.arange(len(self.log_snr), dtype=np.float64)
        # np.interp wants increasing abscissae: read the decreasing table backwards
        tau = torch.from_numpy(np.interp(target.numpy(), self.log_snr.flip(0).numpy(), steps[::-1].copy()))
        return torch.where((tau - tau.round()).abs() < 1e-4, tau.round(), tau)  # the inverse's rounding, undone

    def alpha_sigma(self, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """alpha and sigma [B] at timesteps tau, log-SNR interpolated."""
        low = tau.floor().long().clamp(0, len(self.log_snr) - 1)
        high = (low + 1).clamp(max=len(self.log_snr) - 1)
        log_snr = torch.lerp(self.log_snr[low], self.log_snr[high], tau - low)
        alpha = torch.sigmoid(log_snr).sqrt()
        return alpha, torch.sigmoid(-log_snr).sqrt()


class StableDiffusionAdapter(DenoiserAdapter):
    default_guidance = 5.0

    def __init__(self, pipe, resolution: int | None = None) -> None:
        self.pipe = pipe
        self.denoiser = pipe.unet
        self.time_shift = 1.0
        self.prediction_type = pipe.scheduler.config.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"model: {self.prediction_type!r} UNets are not supported (epsilon, v_prediction)")
        self.levels = NoiseLevels(pipe.scheduler.alphas_cumprod)
        for module in (*self.text_encoders(), *self.image_decoders()):
            module.requires_grad_(False).eval()
        side = resolution or int(pipe.unet.config.sample_size) * pipe.vae_scale_factor
        self._latent_side = side // pipe.vae_scale_factor

    def text_encoders(self) -> list[torch.nn.Module]:
        return [self.pipe.text_encoder]

    def image_decoders(self) -> list[torch.nn.Module]:
        return [self.pipe.vae]

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (int(self.denoiser.config.in_channels), self._latent_side, self._latent_side)

    def _encode_prompts(self, prompts: list[str]) -> PromptEmbeddings:
        states, _ = self.pipe.encode_prompt(prompts, self.device, 1, do_classifier_free_guidance=False)
        return PromptEmbeddings(states.to(self.dtype))

    def unet_output(self, z: torch.Tensor, tau: torch.Tensor, embeddings: PromptEmbeddings) -> torch.Tensor:
        """The UNet's raw prediction (eps or v) for model latents z at timesteps tau."""
        return self.denoiser(z, tau.to(z.dtype), encoder_hidden_states=embeddings.states).sample

    def velocity(self, z: torch.Tensor, t: torch.Tensor, embeddings: PromptEmbeddings) -> torch.Tensor:
        tau = self.levels.timestep(t)
        # the change of variables in fp32: dividing by alpha (0.07 at the last timestep) in bf16 would blur it
        alpha, sigma = (s.view(-1, 1, 1, 1).to(z.device, torch.float32) for s in self.levels.alpha_sigma(tau))
        flow_t = t.view(-1, 1, 1, 1).float()
        z_model = z.float() / torch.sqrt((1 - flow_t) ** 2 + flow_t**2)
        output = self.unet_output(z_model.to(z.dtype), tau.to(z.device), embeddings).float()
        if self.prediction_type == "epsilon":
            eps, x0 = output, (z_model - sigma * output) / alpha
        else:
            eps, x0 = sigma * z_model + alpha * output, alpha * z_model - sigma * output
        return (eps - x0).to(z.dtype)

    def _decode(self, latents: torch.Tensor) -> np.ndarray:
        return vae_decode(self.pipe.vae, latents)


def _load(path: Path, device: torch.device, resolution: int | None) -> StableDiffusionAdapter:
    pipe = load_pipeline("StableDiffusionPipeline", path, device, safety_checker=None, requires_safety_checker=False)
    return StableDiffusionAdapter(pipe, resolution)


#: the UNet's attention projections, as DDPO and most SD LoRAs adapt them
UNET_ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")

FAMILY = ModelFamily(
    name="sd15",
    title="Stable Diffusion 1.x / 2.x",
    pipelines=("StableDiffusionPipeline",),
    load=_load,
    adapter=StableDiffusionAdapter,
    lora_targets=UNET_ATTENTION,
    rollout=RolloutDefaults(resolution=None, steps=20, guidance_scale=5.0),
    denoiser_component="unet",
    kohya_target=kohya_unet_target,
    memory=MemoryOptions(decode_batch=8),
)
