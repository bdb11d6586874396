"""The Latent Space Control engine: pure PyTorch, usable without ComfyUI."""

from .adapters import (TextEncoding, classifier_free_guidance, epsilon_denoiser, open_clip_image_scorer,
                       open_clip_text_encoder, unet_epsilon, vae_decoder, vae_encoder)
from .interpolation import (EASINGS, METHODS, ease, interpolate, interpolate_embeddings, interpolate_latents,
                            interpolate_path, keyframe_path, noise_travel, path_positions, seeded_noise)
from .masks import blend_masked, mask_for_latent
from .optional import require_package
from .sampling import karras_sigmas, sample_euler
from .tokens import common_length, tile_tokens

__all__ = [
    "EASINGS", "METHODS", "ease", "interpolate", "interpolate_embeddings", "interpolate_latents", "interpolate_path", "keyframe_path",
    "noise_travel", "path_positions", "seeded_noise", "blend_masked", "mask_for_latent", "require_package",
    "karras_sigmas", "sample_euler",
    "common_length", "tile_tokens",
    "TextEncoding", "classifier_free_guidance", "epsilon_denoiser", "open_clip_image_scorer", "open_clip_text_encoder",
    "unet_epsilon", "vae_decoder", "vae_encoder",
]
