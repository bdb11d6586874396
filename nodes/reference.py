"""The reference family as native ComfyUI models: the shipped weights (diffusers and open_clip folders) loaded into
ComfyUI's own UNet (``openaimodel`` under ``model_base``), CLIP text model and AutoencoderKL, so every core node,
sampler and patch point works on them as on Stable Diffusion 1.5; and an empty latent sized for any VAE.

Every file is read and checked against the modules it fills before the first ComfyUI object exists: a missing,
truncated or mismatched file stops the loader with a message naming it, and nothing half-built reaches ComfyUI's
model management.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from comfy_api.latest import io

import comfy.clip_model
import comfy.diffusers_convert
import comfy.latent_formats
import comfy.ldm.models.autoencoder
import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models
import comfy.supported_models_base
import comfy.utils

from ..reference.models import LATENT_PREVIEW_FILE, WEIGHTS
from .common import CATEGORY

FAMILY = f"{CATEGORY}/reference"
RETRAIN = "python -m latent_space_control.reference train --out <folder>"


class ReferenceWeightsError(RuntimeError):
    """A shipped file is missing, unreadable or does not fit the model it belongs to."""


def _broken(path: Path, problem: str) -> ReferenceWeightsError:
    return ReferenceWeightsError(
        f"Reference Model Loader (LSC): {path} {problem}. The pack ships this file in reference/weights; reinstall "
        f"the pack (a download that stopped early or a copy without its binary files leaves it broken), or "
        f"retrain the family with {RETRAIN}.")


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise _broken(path, "is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _broken(path, f"is not readable JSON ({error})") from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise _broken(path, "is missing")
    try:
        return comfy.utils.load_torch_file(str(path), safe_load=True)
    except Exception as error:  # safetensors reports a truncated or non-safetensors file in several ways
        raise _broken(path, f"is not a readable safetensors file ({type(error).__name__}: {error})") from None


def settings(path: Path, translate, *args):
    """``translate(*args)``: ComfyUI settings from a config read from ``path``, which must hold what they need."""
    try:
        return translate(*args)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as error:
        problem = f"{type(error).__name__}: {error}"
        raise _broken(path, f"lacks a setting or holds one of the wrong kind ({problem})") from None


def check_fits(path: Path, state_dict: dict[str, torch.Tensor], module: torch.nn.Module) -> None:
    """Every tensor ``module`` needs is in ``state_dict`` with its shape, and nothing else."""
    expected = module.state_dict()
    missing = sorted(expected.keys() - state_dict.keys())
    unexpected = sorted(state_dict.keys() - expected.keys())
    wrong = sorted(key for key in expected.keys() & state_dict.keys()
                   if tuple(expected[key].shape) != tuple(state_dict[key].shape))
    problems = [f"{label}: {', '.join(keys[:4])}{' …' if len(keys) > 4 else ''}"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
    if problems:
        raise _broken(path, "does not fit the model it belongs to (" + "; ".join(problems) + ")")


# ---- UNet -------------------------------------------------------------------------------------------------------

def unet_config(diffusers_config: dict, path: Path) -> dict:
    """ComfyUI's ``openaimodel`` settings for a diffusers UNet2DConditionModel config of the SD1.5 kind (cross
    attention in every block, one transformer per attention, no extra embeddings)."""
    widths = list(diffusers_config["block_out_channels"])
    if diffusers_config.get("norm_num_groups") != 32 or any(width % 32 for width in widths):
        raise _broken(path, "describes GroupNorms that ComfyUI's UNet cannot build (it needs 32 groups and widths "
                            f"that are multiples of 32; found {diffusers_config.get('norm_num_groups')} groups, "
                            f"widths {widths})")
    levels, per_level = len(widths), diffusers_config["layers_per_block"]
    heads = diffusers_config["num_attention_heads"] or diffusers_config["attention_head_dim"]  # diffusers' old name
    return {
        "image_size": diffusers_config["sample_size"], "in_channels": diffusers_config["in_channels"],
        "out_channels": diffusers_config["out_channels"], "model_channels": widths[0],
        "channel_mult": [width // widths[0] for width in widths], "num_res_blocks": [per_level] * levels,
        "transformer_depth": [1] * levels, "transformer_depth_output": [1] * ((per_level + 1) * levels),
        "transformer_depth_middle": 1, "context_dim": diffusers_config["cross_attention_dim"], "num_heads": heads,
        "num_head_channels": -1, "use_linear_in_transformer": diffusers_config["use_linear_projection"],
        "use_spatial_transformer": True, "legacy": False, "adm_in_channels": None,
        "use_temporal_attention": False, "use_temporal_resblock": False,
    }


class ReferenceLatentFormat(comfy.latent_formats.LatentFormat):
    def __init__(self, scale_factor: float, latent_rgb_factors: list[list[float]], latent_rgb_bias: list[float]):
        self.scale_factor = scale_factor
        self.latent_rgb_factors = latent_rgb_factors
        self.latent_rgb_factors_bias = latent_rgb_bias


class ReferenceModelConfig(comfy.supported_models.SD15):
    """SD1.5's model kind (an ε-predicting UNet over 4 latent channels), so patches and packs that check for SD1.5
    treat the reference model as one; float32 only: it is small, and float32 keeps it identical to the engine's."""
    unet_extra_config = {}
    supported_inference_dtypes = [torch.float32]
    memory_usage_factor = 1.0

    def __init__(self, config: dict, latent_format: ReferenceLatentFormat, sampling_settings: dict):
        super().__init__(config)
        self.latent_format = latent_format
        self.sampling_settings = sampling_settings


# diffusers' beta schedule names -> ComfyUI's (ComfyUI's "linear" is SD's linear-in-sqrt schedule).
BETA_SCHEDULES = {"scaled_linear": "linear", "linear": "sqrt_linear", "squaredcos_cap_v2": "squaredcos_cap_v2"}


def sampling_settings(scheduler_config: dict, path: Path) -> dict:
    """ComfyUI's discrete schedule for a diffusers DDPM scheduler config."""
    if scheduler_config.get("prediction_type", "epsilon") != "epsilon":
        raise _broken(path, f"has prediction_type {scheduler_config['prediction_type']!r}; the reference model "
                            "predicts the noise (epsilon)")
    if scheduler_config.get("beta_schedule") not in BETA_SCHEDULES:
        raise _broken(path, f"has beta_schedule {scheduler_config.get('beta_schedule')!r}; expected one of "
                            f"{', '.join(BETA_SCHEDULES)}")
    return {"beta_schedule": BETA_SCHEDULES[scheduler_config["beta_schedule"]],
            "linear_start": scheduler_config["beta_start"],
            "linear_end": scheduler_config["beta_end"], "timesteps": scheduler_config["num_train_timesteps"]}


def build_unet(folder: Path, latent_format: ReferenceLatentFormat, scheduler_file: Path):
    """An unregistered ``model_base.BaseModel`` with the weights loaded (float32)."""
    config_file, weights_file = folder / "config.json", folder / "diffusion_pytorch_model.safetensors"
    config = settings(config_file, unet_config, read_json(config_file), config_file)
    model_config = ReferenceModelConfig(
        config, latent_format, settings(scheduler_file, sampling_settings, read_json(scheduler_file), scheduler_file))
    model_config.set_inference_dtype(torch.float32, None)
    diffusers_state = read_tensors(weights_file)
    key_map = comfy.utils.unet_to_diffusers(model_config.unet_config)
    state = {comfy_key: diffusers_state[key] for key, comfy_key in key_map.items() if key in diffusers_state}
    unmapped = sorted(diffusers_state.keys() - key_map.keys())
    if unmapped:
        raise _broken(weights_file, f"holds tensors the UNet has no place for ({', '.join(unmapped[:4])})")
    model = model_config.get_model({}, device=comfy.model_management.unet_offload_device())
    check_fits(weights_file, state, model.diffusion_model)
    model.diffusion_model.load_state_dict(state, strict=True)
    return model


# ---- VAE --------------------------------------------------------------------------------------------------------

def vae_ddconfig(diffusers_config: dict) -> dict:
    """ComfyUI's AutoencoderKL settings for a diffusers AutoencoderKL config (GroupNorms of 32 groups)."""
    widths = list(diffusers_config["block_out_channels"])
    return {"double_z": True, "z_channels": diffusers_config["latent_channels"],
            "resolution": diffusers_config["sample_size"], "in_channels": diffusers_config["in_channels"],
            "out_ch": diffusers_config["out_channels"], "ch": widths[0],
            "ch_mult": [width // widths[0] for width in widths], "num_res_blocks": diffusers_config["layers_per_block"],
            "attn_resolutions": [], "dropout": 0.0}


def vae_state_dict(diffusers_state: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """diffusers -> ComfyUI keys. ComfyUI's converter numbers the decoder's levels as in SD's four-level VAE; a VAE
    with fewer levels has its decoder levels renumbered from 0."""
    state = comfy.diffusers_convert.convert_vae_state_dict(dict(diffusers_state))
    shift = 4 - levels
    renumbered = {}
    for key, value in state.items():
        if key.startswith("decoder.up."):
            level, rest = key[len("decoder.up."):].split(".", 1)
            key = f"decoder.up.{int(level) - shift}.{rest}"
        renumbered[key] = value
    return renumbered


# ---- CLIP -------------------------------------------------------------------------------------------------------

def text_config(open_clip_config: dict) -> dict:
    """ComfyUI's CLIP text model settings for an open_clip config whose text width equals its embedding width."""
    model, text = open_clip_config["model_cfg"], open_clip_config["model_cfg"]["text_cfg"]
    return {"num_hidden_layers": text["layers"], "hidden_size": text["width"], "num_attention_heads": text["heads"],
            "intermediate_size": int(text["width"] * text.get("mlp_ratio", 4.0)),
            "hidden_act": "quick_gelu" if model.get("quick_gelu") else "gelu",
            "max_position_embeddings": text["context_length"], "eos_token_id": text["eos_id"],
            "vocab_size": text["vocab_size"], "projection_dim": model["embed_dim"], "layer_norm_eps": 1e-5}


class ReferenceTextModel(comfy.clip_model.CLIPTextModel):
    """ComfyUI's CLIP text model with the reference vocabulary (ComfyUI builds CLIP-L's 49408 token rows)."""

    def __init__(self, config_dict, dtype, device, operations):
        super().__init__(config_dict, dtype, device, operations)
        self.text_model.embeddings.token_embedding = operations.Embedding(
            config_dict["vocab_size"], config_dict["hidden_size"], dtype=dtype, device=device)


class ReferenceClipModel(comfy.sd1_clip.SDClipModel):
    # The fork's SD1ClipModel passes textmodel_json_config=None through; the config here is always ``config``.
    def __init__(self, config: dict, device="cpu", dtype=None, model_options={}, textmodel_json_config=None):
        super().__init__(device=device, dtype=dtype, max_length=config["max_position_embeddings"],
                         textmodel_json_config=config, model_class=ReferenceTextModel, layer="last",
                         special_tokens={"start": 1, "end": config["eos_token_id"], "pad": 0},
                         return_projected_pooled=True, model_options=model_options)


class ReferenceTokenizer(comfy.sd1_clip.SDTokenizer):
    """The reference word-level tokenizer: [BOS] words [EOS], padded with [PAD] to the model's context."""

    def __init__(self, folder: str, config: dict, embedding_directory=None, tokenizer_data={}):
        from transformers import PreTrainedTokenizerFast

        super().__init__(tokenizer_path=folder, max_length=config["max_position_embeddings"], pad_with_end=False,
                         embedding_directory=embedding_directory, embedding_size=config["hidden_size"],
                         embedding_key="clip_l", tokenizer_class=PreTrainedTokenizerFast, pad_token=0,
                         tokenizer_data=tokenizer_data)


def clip_state_dict(open_clip_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip -> ComfyUI keys for the text tower; the image tower stays out (ComfyUI's CLIP is a text encoder)."""
    text = {key: value for key, value in open_clip_state.items()
            if not key.startswith("visual.") and key not in ("logit_scale", "attn_mask")}
    return comfy.utils.clip_text_transformers_convert(text, "", "")


# ---- the family -------------------------------------------------------------------------------------------------

def latent_format(scale_factor: float, preview: dict) -> ReferenceLatentFormat:
    factors, bias = preview["latent_rgb_factors"], preview["latent_rgb_factors_bias"]
    if len(bias) != 3 or any(len(row) != 3 for row in factors):
        raise ValueError("expected [latent channels][3] factors and 3 biases")
    return ReferenceLatentFormat(scale_factor, factors, bias)


def load_reference_family(weights: Path):
    """(ModelPatcher, comfy.sd.CLIP, comfy.sd.VAE) over the reference weights, all float32."""
    vae_config_file = weights / "vae" / "config.json"
    vae_config = read_json(vae_config_file)
    preview_file = weights / "vae" / LATENT_PREVIEW_FILE
    scale_factor = settings(vae_config_file, lambda config: float(config["scaling_factor"]), vae_config)
    fmt = settings(preview_file, latent_format, scale_factor, read_json(preview_file))
    unet = build_unet(weights / "unet", fmt, weights / "scheduler" / "scheduler_config.json")

    vae_file = weights / "vae" / "diffusion_pytorch_model.safetensors"
    ddconfig = settings(vae_config_file, vae_ddconfig, vae_config)
    vae_state = vae_state_dict(read_tensors(vae_file), len(ddconfig["ch_mult"]))
    vae_params = {"embed_dim": ddconfig["z_channels"], "ddconfig": ddconfig}
    with torch.device("meta"):
        check_fits(vae_file, vae_state, comfy.ldm.models.autoencoder.AutoencoderKL(**vae_params))

    clip_folder = weights / "clip"
    config_file = clip_folder / "open_clip_config.json"
    config = settings(config_file, text_config, read_json(config_file))
    clip_file = clip_folder / "open_clip_model.safetensors"
    clip_state = clip_state_dict(read_tensors(clip_file))
    check_fits(clip_file, clip_state, ReferenceClipModel(config, device="meta", dtype=torch.float32).transformer)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        read_json(clip_folder / name)

    # Everything fits: only now build ComfyUI's objects (a CLIP registers with model management as it is built).
    model = comfy.model_patcher.ModelPatcher(unet, load_device=comfy.model_management.get_torch_device(),
                                             offload_device=comfy.model_management.unet_offload_device())
    vae = comfy.sd.VAE(sd=vae_state, config={"params": vae_params}, dtype=torch.float32)
    vae.downscale_ratio = vae.upscale_ratio = 2 ** (len(ddconfig["ch_mult"]) - 1)
    target = comfy.supported_models_base.ClipTarget(
        functools.partial(comfy.sd1_clip.SD1Tokenizer, tokenizer=functools.partial(
            ReferenceTokenizer, str(clip_folder), config)),
        functools.partial(comfy.sd1_clip.SD1ClipModel, clip_model=functools.partial(ReferenceClipModel, config)))
    clip = comfy.sd.CLIP(target, model_options={"dtype": torch.float32})
    clip.load_sd(clip_state)
    return model, clip, vae


class ReferenceModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_ReferenceModelLoader",
            display_name="Reference Model Loader (LSC)",
            category=FAMILY,
            description="The pack's built-in reference model, no download: a tiny text-to-image family trained on "
                        "32×32 pictures of one shape (circle, square or triangle; six colours; small or large; left, "
                        "middle or right; white or black background). Prompts like 'a red circle' or 'a large blue "
                        "square on the left, black background'. Its VAE works at a quarter of the picture size: "
                        "make empty latents with Empty Latent for VAE (LSC), or ask Empty Latent Image for twice the "
                        "picture size (64×64 gives 32×32 pictures). For learning, trying nodes and measuring, not "
                        "art.",
            inputs=[],
            outputs=[io.Model.Output(display_name="MODEL", tooltip="The reference UNet as a native ComfyUI model "
                                                                   "(SD1.5 kind, ε prediction, float32)"),
                     io.Clip.Output(display_name="CLIP", tooltip="The reference CLIP text encoder; prompt weights "
                                                                 "like (red:1.2) work"),
                     io.Vae.Output(display_name="VAE", tooltip="The reference VAE: 32×32 pictures <-> 8×8 latents")],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput(*load_reference_family(WEIGHTS))


class EmptyLatentForVAE(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_EmptyLatentForVAE",
            display_name="Empty Latent for VAE (LSC)",
            category=FAMILY,
            description="An empty (all-zero) latent that decodes to pictures of the given size with this VAE: its "
                        "channel count and downscale come from the VAE, so it fits VAEs that do not downscale by 8 "
                        "(the reference VAE downscales by 4).",
            inputs=[
                io.Vae.Input("vae", tooltip="The VAE the latent is for: its latent channels and downscale factor"),
                io.Int.Input("width", default=32, min=4, max=16384, step=4,
                             tooltip="Picture width in pixels; a multiple of the VAE's downscale factor"),
                io.Int.Input("height", default=32, min=4, max=16384, step=4,
                             tooltip="Picture height in pixels; a multiple of the VAE's downscale factor"),
                io.Int.Input("batch_size", default=1, min=1, max=4096, tooltip="How many latents"),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="Zeros [batch, VAE channels, height / "
                                                                     "downscale, width / downscale]")],
        )

    @classmethod
    def execute(cls, vae, width, height, batch_size) -> io.NodeOutput:
        downscale = vae.downscale_ratio
        if not isinstance(downscale, int) or getattr(vae, "latent_dim", 2) != 2:
            raise ValueError("vae: expected a VAE of 2-D image latents; this VAE's latents are not images (use the "
                             "empty-latent node of its model family)")
        for name, size in (("width", width), ("height", height)):
            if size % downscale:
                raise ValueError(f"{name}: expected a multiple of the VAE's downscale factor {downscale}, got {size}")
        samples = torch.zeros(batch_size, vae.latent_channels, height // downscale, width // downscale,
                              device=comfy.model_management.intermediate_device())
        return io.NodeOutput({"samples": samples})


NODES = [ReferenceModelLoader, EmptyLatentForVAE]
