"""The Latent Space Control engine: pure PyTorch, usable without ComfyUI."""

from .adapters import (TextEncoding, classifier_free_guidance, epsilon_denoiser, open_clip_image_scorer,
                       open_clip_text_encoder, unet_epsilon, vae_decoder, vae_encoder)
from .interpolation import (EASINGS, METHODS, ease, interpolate, interpolate_embeddings, interpolate_latents,
                            interpolate_path, keyframe_path, frame_positions, path_positions)
from .masks import blend_masked, mask_for_latent
from .noise import noise_travel, seed_frames, seeded_noise
from .optional import require_package
from .sampling import karras_sigmas, sample_euler
from .tokens import common_length, tile_tokens

__all__ = [
    "EASINGS", "METHODS", "ease", "frame_positions", "interpolate", "interpolate_embeddings", "interpolate_latents",
    "interpolate_path", "keyframe_path", "path_positions",
    "noise_travel", "seed_frames", "seeded_noise",
    "blend_masked", "mask_for_latent", "require_package", "common_length", "tile_tokens",
    "karras_sigmas", "sample_euler",
    "TextEncoding", "classifier_free_guidance", "epsilon_denoiser", "open_clip_image_scorer", "open_clip_text_encoder",
    "unet_epsilon", "vae_decoder", "vae_encoder",
]
