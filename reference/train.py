"""Retrain the reference family from scratch, deterministically, on the CPU.

    python -m latent_space_control.reference train --out DIR [--only vae|clip|unet|lm]

``--out`` has no default, so a retraining never overwrites the shipped weights by accident; to replace them, name
their folder (``reference/weights``). Order matters: the UNet learns in the VAE's latent space and attends to the
CLIP text tower, so those two come first. Every stage is seeded, runs with deterministic algorithms on two threads
(restoring the caller's torch settings afterwards), and draws its data from the procedural world and the LM grammar;
the same command on the same library versions writes the same bytes.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from ..core.adapters import open_clip_image_scorer, open_clip_text_encoder, vae_encoder
from ..core.optional import require_package
from . import grammar, models, world

SEED = 0
THREADS = 2
TRAIN_PICTURES = 8192
STAGES = ("vae", "clip", "unet", "lm")
Log = Callable[[str], None]


@contextmanager
def deterministic(seed: int) -> Iterator[torch.Generator]:
    """Seed torch's CPU generator, use deterministic algorithms on ``THREADS`` threads, and yield a private generator
    for the training data; on exit the caller's RNG state, algorithm setting and thread count come back."""
    algorithms = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        # The CPU generator only (torch.manual_seed would also reseed CUDA's, which fork_rng(devices=[]) leaves
        # alone): it seeds the models' initial weights and dropout; everything trains on the CPU.
        torch.default_generator.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(THREADS)
        try:
            yield torch.Generator().manual_seed(seed)
        finally:
            torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
            torch.set_num_threads(threads)


def training_set(count: int = TRAIN_PICTURES, seed: int = SEED) -> tuple[list[world.Scene], torch.Tensor]:
    """Pictures of every shape-and-colour pair but the held-out ones (``world.HELD_OUT``)."""
    scenes = world.scenes(count, seed=seed, held_out=False)
    return scenes, world.render_batch(scenes)


@dataclass
class TrainingPrompts:
    """Every distinct prompt a scene can be described by — the full caption and every partial one, the background
    clause last or first — and which attribute values each names, so that the models learn prompts as artists
    write them, not only the 216 captions."""
    texts: list[str]
    named_values: torch.Tensor  # [prompts, attributes]: the index of the value a prompt names, -1 where it names none
    by_kind: torch.Tensor  # [scene kinds, named subsets, 2 orders] -> prompt index

    @classmethod
    def build(cls) -> "TrainingPrompts":
        texts, index, named_values = [], {}, []
        kinds, subsets = models.every_scene(), models.named_subsets()
        by_kind = torch.empty(len(kinds), len(subsets), 2, dtype=torch.long)
        for k, scene in enumerate(kinds):
            for s, named in enumerate(subsets):
                for order in (0, 1):
                    text = scene.prompt(named, background_first=bool(order))
                    if text not in index:
                        index[text] = len(texts)
                        texts.append(text)
                        named_values.append(_value_indices(scene, ("shape", *named)))
                    by_kind[k, s, order] = index[text]
        return cls(texts, torch.tensor(named_values), by_kind)

    def draw(self, kinds: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A prompt index per picture of scene kind ``kinds``: the full caption half the time, otherwise each optional
        attribute named with probability 1/2; the background clause first half the time."""
        count, optional = len(kinds), len(world.OPTIONAL_IN_PROMPTS)
        full = torch.rand(count, generator=generator) < 0.5
        named = (torch.rand(count, optional, generator=generator) < 0.5) | full[:, None]
        subset = (named.long() << torch.arange(optional)).sum(dim=1)  # the bit order of models.named_subsets()
        background_first = (torch.rand(count, generator=generator) < 0.5).long()
        return self.by_kind[kinds, subset, background_first]

    def matches(self, scene_values: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """[pictures, prompts]: whether each picture (its ``_value_indices``) has every attribute each prompt names."""
        named = self.named_values[prompts][None]
        return ((named < 0) | (named == scene_values[:, None])).all(dim=-1)


def _value_indices(scene: world.Scene, named=tuple(world.ATTRIBUTES)) -> list[int]:
    return [world.ATTRIBUTES[name].index(getattr(scene, name)) if name in named else -1 for name in world.ATTRIBUTES]


def _scene_kinds(scenes: list[world.Scene]) -> torch.Tensor:
    """Each scene's index in ``models.every_scene()``."""
    index = {tuple(_value_indices(kind)): k for k, kind in enumerate(models.every_scene())}
    return torch.tensor([index[tuple(_value_indices(scene))] for scene in scenes])


def fit(parameters, loss_at: Callable[[int], torch.Tensor], steps: int, peak_lr: float, log: Log, name: str,
        weight_decay: float = 0.0) -> None:
    """AdamW with a short linear warm-up and a cosine decay to zero; ``loss_at(step)`` draws its own batch."""
    optimization = require_package("diffusers.optimization", "diffusers", "the training's learning-rate schedule")
    parameters = [p for p in parameters if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=peak_lr, betas=(0.9, 0.99), weight_decay=weight_decay)
    schedule = optimization.get_cosine_schedule_with_warmup(optimizer, steps // 20, steps)
    start, running = time.perf_counter(), None
    for step in range(steps):
        loss = loss_at(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % max(1, steps // 10) == 0 or step + 1 == steps:
            log(f"{name}: step {step + 1}/{steps}, loss {running:.4f}, {time.perf_counter() - start:.0f} s")


def train_vae(pictures: torch.Tensor, log: Log, steps: int = 3000, batch: int = 32):
    diffusers = require_package("diffusers", "diffusers", "training the reference VAE")
    with deterministic(SEED + 1) as generator:
        vae = diffusers.AutoencoderKL(**models.VAE_CONFIG)
        with torch.no_grad():  # start the posterior narrow (std ~0.05): at std 1 its noise drowns the picture at first
            vae.encoder.conv_out.bias[models.VAE_CONFIG["latent_channels"]:] = -6.0
        targets = pictures * 2 - 1

        def loss_at(step: int) -> torch.Tensor:
            x = targets[torch.randint(len(targets), (batch,), generator=generator)]
            posterior = vae.encode(x).latent_dist
            error = vae.decode(posterior.sample(generator)).sample - x
            # L1 keeps edges sharp, the squared error punishes colour shifts; the weak KL term only keeps the latent
            # from drifting to huge values.
            return error.abs().mean() + error.pow(2).mean() + 1e-6 * posterior.kl().mean()

        fit(vae.parameters(), loss_at, steps, 2e-3, log, "vae")
        encode = vae_encoder(vae.eval())
        with torch.no_grad():
            spread = torch.cat([encode(chunk) for chunk in pictures.split(512)]).std()
        vae.register_to_config(scaling_factor=round(1.0 / spread.item(), 5))
        return vae


@torch.no_grad()
def latent_preview(vae, pictures: torch.Tensor) -> dict[str, list]:
    """The linear map (and bias) from a scaled latent cell to the RGB, in -1..1, of the picture block it encodes, by
    least squares: ComfyUI's sampler previews colour latents with it (``latent_rgb_factors``, [channels][3]). The
    border cells encode their blocks differently (the convolutions' padding) and are left out of the fit. The VAE
    encodes hue non-linearly, so a linear preview shows layout and brightness well and hue only roughly."""
    latents = torch.cat([vae_encoder(vae)(chunk) for chunk in pictures.split(512)]) * vae.config.scaling_factor
    blocks = F.avg_pool2d(pictures * 2 - 1, pictures.shape[-1] // latents.shape[-1])
    latents, blocks = latents[..., 1:-1, 1:-1], blocks[..., 1:-1, 1:-1]
    inputs = latents.movedim(1, -1).reshape(-1, latents.shape[1])
    inputs = torch.cat([inputs, torch.ones(len(inputs), 1)], dim=1).double()
    solution = torch.linalg.lstsq(inputs, blocks.movedim(1, -1).reshape(-1, 3).double()).solution.float()
    return {"latent_rgb_factors": [[round(v, 5) for v in row] for row in solution[:-1].tolist()],
            "latent_rgb_factors_bias": [round(v, 5) for v in solution[-1].tolist()]}


def save_vae(vae, pictures: torch.Tensor, folder: Path) -> None:
    """A diffusers folder, with the sampler-preview colours beside the weights."""
    vae.save_pretrained(folder)
    models.save_json(folder / models.LATENT_PREVIEW_FILE, latent_preview(vae, pictures))


def _clip_tokens(tokenizer, clip) -> Callable[[list[str]], torch.Tensor]:
    """Texts -> token ids padded to the CLIP's context, as open_clip's HFTokenizer gives them once saved."""
    return lambda texts: tokenizer(list(texts), padding="max_length", max_length=clip.context_length,
                                   truncation=True, return_tensors="pt").input_ids


def train_clip(scenes: list[world.Scene], pictures: torch.Tensor, tokenizer, log: Log, steps: int = 2000,
               batch: int = 128):
    open_clip = require_package("open_clip", "open_clip_torch", "training the reference CLIP")
    with deterministic(SEED + 2) as generator:
        models.register_clip_config()
        clip = open_clip.create_model(models.CLIP_NAME)
        vocab_size = clip.token_embedding.num_embeddings
        if vocab_size != len(tokenizer):
            raise ValueError(f"{models.CLIP_CONFIG_FILE.name} has vocab_size {vocab_size} but the tokenizer has "
                             f"{len(tokenizer)} tokens; update the config")
        prompts = TrainingPrompts.build()
        tokens = _clip_tokens(tokenizer, clip)(prompts.texts)
        kinds = _scene_kinds(scenes)
        values = torch.tensor([_value_indices(scene) for scene in scenes])
        score = open_clip_image_scorer(clip)

        def loss_at(step: int) -> torch.Tensor:
            pick = torch.randint(len(pictures), (batch,), generator=generator)
            ids = prompts.draw(kinds[pick], generator)
            image_features = score(pictures[pick])
            text_features = clip.encode_text(tokens[ids], normalize=True)
            logits = clip.logit_scale.exp() * image_features @ text_features.T
            # A prompt fits every picture in the batch that has the attributes it names ("a circle" fits every
            # circle): each such pair is a positive, not a negative.
            fits = prompts.matches(values[pick], ids).float()
            return (F.cross_entropy(logits, fits / fits.sum(dim=1, keepdim=True))
                    + F.cross_entropy(logits.T, (fits / fits.sum(dim=0, keepdim=True)).T)) / 2

        fit(clip.parameters(), loss_at, steps, 2e-3, log, "clip", weight_decay=0.05)
        return clip.eval()


def train_unet(vae, clip, tokenizer, pictures: torch.Tensor, scenes: list[world.Scene], log: Log,
               steps: int = 2500, batch: int = 48, uncond_rate: float = 0.1):
    diffusers = require_package("diffusers", "diffusers", "training the reference UNet")
    training_utils = require_package("diffusers.training_utils", "diffusers", "training the reference UNet")
    with deterministic(SEED + 3) as generator:
        scheduler = diffusers.DDPMScheduler(**models.SCHEDULER_CONFIG)
        unet = diffusers.UNet2DConditionModel(**models.UNET_CONFIG)
        with torch.no_grad():
            # The whole posterior, not only the mean that core.adapters.vae_encoder gives: the UNet learns from
            # samples of it.
            posteriors = [vae.encode(chunk * 2 - 1).latent_dist for chunk in pictures.split(512)]
            means = torch.cat([p.mean for p in posteriors]) * vae.config.scaling_factor
            stds = torch.cat([p.std for p in posteriors]) * vae.config.scaling_factor
            prompts = TrainingPrompts.build()
            encode = open_clip_text_encoder(clip, _clip_tokens(tokenizer, clip))
            contexts = encode(prompts.texts).hidden_states
            empty = encode([""]).hidden_states
        kinds = _scene_kinds(scenes)

        def loss_at(step: int) -> torch.Tensor:
            pick = torch.randint(len(means), (batch,), generator=generator)
            latents = means[pick] + stds[pick] * torch.randn(means[pick].shape, generator=generator)
            context = contexts[prompts.draw(kinds[pick], generator)]
            dropped = torch.rand(batch, generator=generator) < uncond_rate  # classifier-free guidance dropout
            context = torch.where(dropped[:, None, None], empty, context)
            timesteps = torch.randint(scheduler.config.num_train_timesteps, (batch,), generator=generator)
            noise = torch.randn(latents.shape, generator=generator)
            noisy = scheduler.add_noise(latents, noise, timesteps)
            error = (unet(noisy, timesteps, encoder_hidden_states=context).sample - noise).pow(2).mean(dim=(1, 2, 3))
            # Min-SNR weighting (Hang et al., 2023): the nearly clean steps stop dominating, training converges
            # faster.
            snr = training_utils.compute_snr(scheduler, timesteps)
            return (error * snr.clamp(max=5.0) / snr).mean()

        fit(unet.parameters(), loss_at, steps, 1e-3, log, "unet")
        return unet.eval(), scheduler


def train_lm(tokenizer, log: Log, steps: int = 1500, batch: int = 64):
    transformers = require_package("transformers", "transformers", "training the reference LM")
    with deterministic(SEED + 4) as generator:
        config = transformers.GPT2Config(vocab_size=len(tokenizer), bos_token_id=models.BOS,
                                         eos_token_id=models.EOS, pad_token_id=models.PAD, **models.LM_CONFIG)
        lm = transformers.GPT2LMHeadModel(config)
        encoded = tokenizer(grammar.sentences(20000, seed=SEED), padding="longest", return_tensors="pt")
        ids, mask = encoded.input_ids, encoded.attention_mask
        labels = ids.masked_fill(mask == 0, -100)

        def loss_at(step: int) -> torch.Tensor:
            pick = torch.randint(len(ids), (batch,), generator=generator)
            return lm(input_ids=ids[pick], attention_mask=mask[pick], labels=labels[pick]).loss

        fit(lm.parameters(), loss_at, steps, 3e-3, log, "lm", weight_decay=0.01)
        return lm.eval()


def save_clip(clip, tokenizer, folder: Path) -> None:
    """An open_clip ``local-dir:`` folder: config, weights and the tokenizer beside them."""
    safetensors = require_package("safetensors.torch", "safetensors", "saving the reference CLIP")
    folder.mkdir(parents=True, exist_ok=True)
    model_cfg = json.loads(models.CLIP_CONFIG_FILE.read_text(encoding="utf-8"))
    models.save_json(folder / "open_clip_config.json",
                     {"model_cfg": model_cfg, "preprocess_cfg": dict(clip.visual.preprocess_cfg)})
    safetensors.save_file({k: v.contiguous() for k, v in clip.state_dict().items()},
                          str(folder / "open_clip_model.safetensors"))
    models.save_tokenizer(folder)


def save_lm(lm, folder: Path) -> None:
    """A transformers folder: the LM and the tokenizer beside it."""
    lm.save_pretrained(folder)
    models.save_tokenizer(folder)


def train(out: Path | str, only: str | None = None, log: Log = print) -> None:
    """Train every stage (or ``only`` one, reusing the others' saved weights from ``out``) into ``out``."""
    out = Path(out)
    start = time.perf_counter()
    tokenizer = models.build_tokenizer()
    scenes, pictures = training_set()
    stages = STAGES if only is None else (only,)
    if "vae" in stages:
        save_vae(train_vae(pictures, log), pictures, out / "vae")
    if "clip" in stages:
        save_clip(train_clip(scenes, pictures, tokenizer, log), tokenizer, out / "clip")
    if "unet" in stages:
        clip, _ = models.load_clip(out / "clip")
        unet, scheduler = train_unet(models.load_vae(out / "vae"), clip, tokenizer, pictures, scenes, log)
        unet.save_pretrained(out / "unet")
        scheduler.save_pretrained(out / "scheduler")
    if "lm" in stages:
        save_lm(train_lm(tokenizer, log), out / "lm")
    log(f"trained {', '.join(stages)} in {time.perf_counter() - start:.0f} s into {out}")
