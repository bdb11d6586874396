"""Library models as the engine's callables.

The engine works on plain callables: a denoiser ``x, sigma -> x0``, a decoder ``latent -> image``, an image scorer
``image -> embedding`` and a text encoder ``prompts -> (hidden states, embedding)``. These functions make those
callables from the models users have — diffusers UNets and VAEs, open_clip CLIPs — duck-typed, so this module
imports none of those libraries.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from .sampling import Denoiser

EpsilonModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sigmas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The noise level of each discrete training step: x_t / sqrt(alpha_bar) = x0 + sigma * eps."""
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt()


def sigma_to_timestep(sigma: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """The (fractional) training step of each noise level, interpolated in log sigma between the two nearest steps."""
    log_sigmas = sigmas.log()
    log_sigma = sigma.log()
    high = torch.searchsorted(log_sigmas, log_sigma).clamp(1, len(sigmas) - 1)
    low_value, high_value = log_sigmas[high - 1], log_sigmas[high]
    weight = ((log_sigma - low_value) / (high_value - low_value)).clamp(0, 1)
    return high - 1 + weight


def epsilon_denoiser(epsilon_model: EpsilonModel, alphas_cumprod: torch.Tensor) -> Denoiser:
    """A denoiser from a model trained to predict the noise at discrete steps (DDPM, Stable Diffusion):
    ``epsilon_model(x / sqrt(1 + sigma^2), timestep)`` is that model on its own input scale."""
    sigmas = sigmas_from_alphas_cumprod(alphas_cumprod.double()).float()

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = sigma.to(x.device, torch.float32).reshape(-1)
        timestep = sigma_to_timestep(sigma, sigmas.to(sigma.device))
        scale = sigma.reshape(-1, *[1] * (x.ndim - 1)).to(x.dtype)
        epsilon = epsilon_model(x / (1 + scale ** 2).sqrt(), timestep)
        return x - scale * epsilon

    return denoise


def unet_epsilon(unet, encoder_hidden_states: torch.Tensor) -> EpsilonModel:
    """A diffusers UNet2DConditionModel conditioned on fixed text hidden states ([1 or B, tokens, width])."""

    def epsilon(x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        context = encoder_hidden_states.to(x).expand(x.shape[0], -1, -1)
        return unet(x, timestep.to(x), encoder_hidden_states=context).sample

    return epsilon


def classifier_free_guidance(conditional: Denoiser, unconditional: Denoiser, scale: float) -> Denoiser:
    """Ho & Salimans (2022): move from the unconditional prediction towards the conditional one, ``scale`` times."""

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        uncond = unconditional(x, sigma)
        return uncond + scale * (conditional(x, sigma) - uncond)

    return denoise


def vae_decoder(vae) -> Callable[[torch.Tensor], torch.Tensor]:
    """A diffusers AutoencoderKL as ``latent -> image``: raw VAE latents (not scaled by ``scaling_factor``) to RGB in
    0..1 (not clamped, so gradients flow everywhere)."""
    return lambda latent: (vae.decode(latent).sample + 1) / 2


def vae_encoder(vae) -> Callable[[torch.Tensor], torch.Tensor]:
    """A diffusers AutoencoderKL as ``image -> latent``: RGB in 0..1 to the raw latent's posterior mean."""
    return lambda image: vae.encode(image * 2 - 1).latent_dist.mean


class TextEncoding(NamedTuple):
    hidden_states: torch.Tensor  # [B, tokens, width]: the last layer, after the final norm (what a UNet attends to)
    embedding: torch.Tensor  # [B, embed_dim]: the pooled, projected, unit-length text embedding


def open_clip_text_encoder(model, tokenizer) -> Callable[[list[str]], TextEncoding]:
    """An open_clip CLIP and its tokenizer as ``prompts -> TextEncoding``."""

    def encode(prompts: list[str]) -> TextEncoding:
        tokens = tokenizer(list(prompts)).to(next(model.parameters()).device)
        out = model.forward_intermediates(text=tokens, text_indices=1, normalize_intermediates=True)
        return TextEncoding(out["text_intermediates"][-1], out["text_features"])

    return encode


def open_clip_image_scorer(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """An open_clip CLIP as ``image -> unit-length embedding`` for RGB in 0..1 at any size: resized to the model's
    input size and normalised as its preprocessing does, differentiably (no PIL round trip)."""
    config = model.visual.preprocess_cfg
    size = config["size"] if isinstance(config["size"], (tuple, list)) else (config["size"], config["size"])
    mean = torch.tensor(config["mean"]).reshape(1, 3, 1, 1)
    std = torch.tensor(config["std"]).reshape(1, 3, 1, 1)

    def score(image: torch.Tensor) -> torch.Tensor:
        if tuple(image.shape[-2:]) != tuple(size):
            image = F.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=True)
        image = (image - mean.to(image)) / std.to(image)
        return model.encode_image(image, normalize=True)

    return score
