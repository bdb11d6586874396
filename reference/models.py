"""The reference model family: configurations, the shared word-level tokenizer, and loading the shipped weights.

Every model is a stock class of the library real models come from, saved in that library's own folder format, so
it loads exactly as a user's model does: diffusers ``from_pretrained`` folders for the VAE and the UNet, an open_clip
``local-dir:`` folder for the CLIP, a transformers folder for the LM. The heavy libraries load only when a model does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.adapters import (TextEncoding, classifier_free_guidance, epsilon_denoiser, open_clip_image_scorer,
                             open_clip_text_encoder, sigmas_from_alphas_cumprod, unet_epsilon, vae_decoder,
                             vae_encoder)
from ..core.optional import require_package
from ..core.noise import seeded_noise
from ..core.sampling import karras_sigmas, sample_euler
from . import grammar, world

WEIGHTS = Path(__file__).parent / "weights"
CLIP_CONFIG_FILE = Path(__file__).parent / "LSC-Reference-CLIP.json"  # registered with open_clip by its file name
CLIP_NAME = CLIP_CONFIG_FILE.stem
LATENT_PREVIEW_FILE = "latent_preview.json"  # beside the VAE: ComfyUI's sampler-preview colours (train.latent_preview)

# 32x32x3 pictures <-> 8x8x4 latents (three resolutions, two downsamplings). Every width is a multiple of 32 and
# every GroupNorm has 32 groups, as ComfyUI's own AutoencoderKL and UNet modules build them, so the same weights
# load there natively (nodes/reference.py).
DOWNSCALE = 4
VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=world.SIZE,
                  down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                  block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=32)
# attention_head_dim is diffusers' historical name for the number of heads in this class: 8 heads.
UNET_CONFIG = dict(sample_size=world.SIZE // DOWNSCALE, in_channels=4, out_channels=4, layers_per_block=1,
                   down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                   up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), block_out_channels=(64, 128),
                   attention_head_dim=8, norm_num_groups=32, cross_attention_dim=64)
LATENT_SHAPE = (4, world.SIZE // DOWNSCALE, world.SIZE // DOWNSCALE)
# Stable Diffusion's discrete noise schedule, predicting the noise.
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                        prediction_type="epsilon")
LM_CONFIG = dict(n_positions=32, n_embd=64, n_layer=2, n_head=4)

SPECIAL_TOKENS = {"pad_token": "[PAD]", "bos_token": "[BOS]", "eos_token": "[EOS]", "unk_token": "[UNK]"}
PAD, BOS, EOS = 0, 1, 2


def words() -> list[str]:
    """Every word and punctuation mark of the captions and of the LM's language."""
    caption_words = {word for scene in every_scene() for word in scene.caption().replace(",", " ,").split()}
    return sorted(caption_words | set(grammar.vocabulary()))


def every_scene() -> list[world.Scene]:
    return [world.Scene(shape, colour, size, position, background) for shape in world.SHAPES
            for colour in world.COLOURS for size in world.SIZES for position in world.POSITIONS
            for background in world.BACKGROUNDS]


def every_caption() -> list[str]:
    """The 216 distinct captions of the world."""
    return [scene.caption() for scene in every_scene()]


def named_subsets() -> list[tuple[str, ...]]:
    """Every choice of the optional attributes a prompt names, the empty one first and the full caption's last."""
    optional = world.OPTIONAL_IN_PROMPTS
    return [tuple(name for bit, name in enumerate(optional) if mask >> bit & 1) for mask in range(2 ** len(optional))]


def build_tokenizer():
    """A word-level tokenizer over ``words()``: ids 0..3 are [PAD] [BOS] [EOS] [UNK]; every text becomes
    [BOS] words [EOS]. Saved with the CLIP and the LM as a standard ``tokenizer.json``."""
    tokenizers = require_package("tokenizers", "tokenizers", "the reference world's tokenizer")
    transformers = require_package("transformers", "transformers", "the reference world's tokenizer")
    specials = list(SPECIAL_TOKENS.values())
    vocab = {token: index for index, token in enumerate(specials + words())}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = tokenizers.normalizers.Lowercase()
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.post_processor = tokenizers.processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", BOS), ("[EOS]", EOS)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=LM_CONFIG["n_positions"],
                                                clean_up_tokenization_spaces=True, **SPECIAL_TOKENS)


def save_tokenizer(folder: Path) -> None:
    """Save a fresh tokenizer (one that has been used would carry its last padding setting into the file) as
    transformers does, under the class name that transformers 4 and 5 both load."""
    build_tokenizer().save_pretrained(folder)
    config_file = Path(folder) / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    save_json(config_file, config)


def register_clip_config() -> None:
    """Make ``CLIP_NAME`` known to open_clip (``open_clip.create_model(CLIP_NAME)`` builds it untrained)."""
    open_clip = require_package("open_clip", "open_clip_torch", "the reference CLIP")
    if CLIP_NAME not in open_clip.list_models():
        open_clip.add_model_config(CLIP_CONFIG_FILE)


@dataclass
class ReferenceWorld:
    """The trained family, in eval mode, with the engine's callables over it."""
    vae: torch.nn.Module
    unet: torch.nn.Module
    alphas_cumprod: torch.Tensor
    clip: torch.nn.Module
    clip_tokenizer: object
    lm: torch.nn.Module
    lm_tokenizer: object

    @property
    def scaling_factor(self) -> float:
        """Raw VAE latent times this is the UNet's latent (unit spread), as in Stable Diffusion."""
        return float(self.vae.config.scaling_factor)

    def encode_text(self, prompts: list[str]) -> TextEncoding:
        return open_clip_text_encoder(self.clip, self.clip_tokenizer)(prompts)

    def score_images(self, images: torch.Tensor) -> torch.Tensor:
        return open_clip_image_scorer(self.clip)(images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents -> pictures in 0..1."""
        return vae_decoder(self.vae)(latents)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Pictures in 0..1 -> raw VAE latents."""
        return vae_encoder(self.vae)(images)

    def denoiser(self, context: torch.Tensor, cfg_scale: float, negative: str = ""):
        """The UNet as a denoiser over its (scaled) latents, attending to ``context`` (text hidden states, one per
        batch item or one for all), with classifier-free guidance against the prompt ``negative``."""
        conditional = epsilon_denoiser(unet_epsilon(self.unet, context), self.alphas_cumprod)
        if cfg_scale == 1.0:
            return conditional
        unconditional = epsilon_denoiser(unet_epsilon(self.unet, self.encode_text([negative]).hidden_states),
                                         self.alphas_cumprod)
        return classifier_free_guidance(conditional, unconditional, cfg_scale)

    def sigma_range(self) -> tuple[float, float]:
        """The smallest and largest noise level the UNet was trained at."""
        sigmas = sigmas_from_alphas_cumprod(self.alphas_cumprod)
        return float(sigmas[0]), float(sigmas[-1])

    def sample_latents(self, context: torch.Tensor, noise: torch.Tensor, steps: int = 20, cfg_scale: float = 4.0,
                       callback=None) -> torch.Tensor:
        """Raw VAE latents sampled from unit ``noise`` [B, 4, 8, 8] with the Euler sampler on the Karras schedule
        over the model's noise range; ``callback`` as ``sample_euler``'s."""
        sigmas = karras_sigmas(steps, *self.sigma_range())
        latents = sample_euler(self.denoiser(context, cfg_scale), noise * sigmas[0], sigmas, callback)
        return latents / self.scaling_factor

    def generate(self, prompts: list[str], seed: int, steps: int = 20, cfg_scale: float = 4.0) -> torch.Tensor:
        """Pictures in 0..1 for ``prompts``, from the noise of ``seed``."""
        noise = seeded_noise(seed, (len(prompts), *LATENT_SHAPE))
        latents = self.sample_latents(self.encode_text(prompts).hidden_states, noise, steps, cfg_scale)
        return self.decode(latents).clamp(0, 1)

    def write(self, prompt: str, count: int, seed: int, max_new_tokens: int = 24) -> list[str]:
        """``count`` sentences the LM writes after ``prompt`` (empty: from the start), sampled at temperature 1."""
        ids = self.lm_tokenizer([prompt] * count, return_tensors="pt").input_ids[:, :-1]  # without [EOS]: continue
        with torch.random.fork_rng(devices=[]):  # generate() samples from the global generator: seed a private copy
            torch.manual_seed(seed)
            out = self.lm.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0,
                                   max_new_tokens=max_new_tokens, eos_token_id=EOS, pad_token_id=PAD)
        return self.lm_tokenizer.batch_decode(out, skip_special_tokens=True)


# Local files only; the models are small enough to load without accelerate's low-memory path (nor its warning).
_TINY = dict(local_files_only=True, low_cpu_mem_usage=False)


def load_vae(folder: Path):
    diffusers = require_package("diffusers", "diffusers", "the reference world")
    return diffusers.AutoencoderKL.from_pretrained(folder, **_TINY).eval()


def load_clip(folder: Path):
    """An open_clip model and its tokenizer from a ``local-dir:`` folder, as open_clip loads any such folder."""
    open_clip = require_package("open_clip", "open_clip_torch", "the reference world")
    return open_clip.create_model(f"local-dir:{folder}").eval(), open_clip.get_tokenizer(f"local-dir:{folder}")


def load(weights: Path | str = WEIGHTS) -> ReferenceWorld:
    """The shipped reference family, from local files only."""
    weights = Path(weights)
    missing = [part for part in ("vae", "unet", "scheduler", "clip", "lm") if not (weights / part).is_dir()]
    if missing:
        raise FileNotFoundError(f"The reference weights in {weights} lack {', '.join(missing)}; retrain them with "
                                f"python -m latent_space_control.reference train --out {weights}")
    diffusers = require_package("diffusers", "diffusers", "the reference world")
    transformers = require_package("transformers", "transformers", "the reference world")
    unet = diffusers.UNet2DConditionModel.from_pretrained(weights / "unet", **_TINY).eval()
    scheduler = diffusers.DDPMScheduler.from_pretrained(weights / "scheduler", local_files_only=True)
    clip, clip_tokenizer = load_clip(weights / "clip")
    lm = transformers.AutoModelForCausalLM.from_pretrained(weights / "lm", local_files_only=True).eval()
    lm_tokenizer = transformers.AutoTokenizer.from_pretrained(weights / "lm", local_files_only=True)
    return ReferenceWorld(load_vae(weights / "vae"), unet, scheduler.alphas_cumprod.clone(), clip, clip_tokenizer,
                          lm, lm_tokenizer)


def save_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
