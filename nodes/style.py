"""Style mixing nodes: structure from one source, style from another, by timestep, by UNet block, by latent
statistics and frequency, and by shared attention across a batch."""

from __future__ import annotations

from comfy_api.latest import io

from ..core import style
from .common import CATEGORY, new_latent, parse_channels, timestep_mixed_conditioning
from .dit_blocks import dit_blocks, dit_preset_blocks, patch_dit, require_text_width
from .schedule_window import sigma_window, window_error, window_inputs
from .unet_blocks import (PRESET_TIPS, PRESETS, CrossAttentionMix, SharedSelfAttention, attention_blocks, is_unet,
                          parse_block_weights, preset_blocks)

FAMILY = f"{CATEGORY}/style"
# On the reference family the layout (place, background) is settled by 0.55 of the schedule, the colour by 0.85,
# the shape only after 0.95 (benchmarks/fidelity.py, style_curve_*): 0.6 takes the layout from structure and the
# colour from style.
DEFAULT_CUTOFF = 0.6
LATENT_MODES = ("adain", "frequency", "channels")


class StyleMix(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_StyleMix",
            display_name="Style Mix by Timestep (LSC)",
            category=FAMILY,
            description="One conditioning that is the structure prompt early in sampling, where the layout is decided, "
                        "and the style prompt after the cutoff, where colour and detail are painted; optionally a "
                        "smooth cross-fade. Works with every sampler and model family.",
            inputs=[
                io.Conditioning.Input("structure", tooltip="Conditioning for the first part of the schedule: what "
                                                           "is where (source A)"),
                io.Conditioning.Input("style", tooltip="Conditioning for the rest of the schedule: colour, "
                                                       "texture, detail (source B)"),
                io.Float.Input("cutoff", default=DEFAULT_CUTOFF, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the schedule where style takes over (0: style only, 1: "
                                       "structure only). Whatever the model settles before the cutoff comes from "
                                       "structure, the rest from style. On the reference model layout settles by "
                                       f"0.55, colour by 0.85, shape after 0.95, so {DEFAULT_CUTOFF} gives "
                                       "structure's layout with style's colour; SD-type models settle composition "
                                       "in roughly the first 20–40 %"),
                io.Float.Input("window", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Width of a smooth cross-fade centred on the cutoff (0: a hard switch). The "
                                       "predictions of both prompts are blended there, which costs one more model "
                                       "pass per step inside the window"),
            ],
            outputs=[io.Conditioning.Output(display_name="conditioning",
                                             tooltip="Use as the positive conditioning of any sampler")],
        )

    @classmethod
    def execute(cls, structure, style, cutoff, window) -> io.NodeOutput:
        return io.NodeOutput(timestep_mixed_conditioning(structure, style, cutoff, window))


class StyleMixBlocks(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        presets = "; ".join(f"{name}: {tip}" for name, tip in PRESET_TIPS.items())
        return io.Schema(
            node_id="LSC_StyleMixBlocks",
            display_name="Style Mix by Block (LSC)",
            category=FAMILY,
            description="Feed the style conditioning to chosen UNet blocks only (the layer-mixing of StyleGAN): the "
                        "sampler's prompt decides what the other blocks decide. UNet models (SD1.5, SDXL, the "
                        "reference family) through cross-attention patches; Flux (double_/single_ blocks) and SD3 "
                        "(joint_ blocks) through block replacements that carry the style prompt's own text stream "
                        "(one more pass per block up to the last chosen one).",
            inputs=[
                io.Model.Input("model", tooltip="The UNet model to patch (a patched copy is returned; the input is "
                                                "left as it is)"),
                io.Conditioning.Input("style", tooltip="What the chosen blocks see instead of the prompt; its first "
                                                       "entry's text tokens are used"),
                io.Combo.Input("blocks", options=[*PRESETS, "custom"], default="style",
                               tooltip=f"Which blocks see the style prompt. UNet: {presets}. Flux/SD3 (by depth): "
                                       "composition the first third of the double/joint blocks, style the last "
                                       "third, coarse the first half of all blocks, fine the second half. custom: "
                                       "block_weights alone"),
                io.Float.Input("weight", default=1.0, min=-1.0, max=2.0, step=0.05,
                               tooltip="How far the chosen blocks' prompt moves towards style (1: style alone, 0: "
                                       "unchanged; beyond 1 exaggerates)"),
                io.String.Input("block_weights", default="", multiline=True,
                                tooltip="Extra or overriding blocks, e.g. 'input_8, output_1:0.5' (name or "
                                        "name:weight; all = every block); names as ComfyUI's block patches use "
                                        "them. Added to the preset; alone with custom"),
                *window_inputs(),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip="The model with the block patch")],
        )

    @classmethod
    def validate_inputs(cls, start_percent, end_percent):
        return window_error(start_percent, end_percent) or True

    @classmethod
    def execute(cls, model, style, blocks, weight, block_weights, start_percent, end_percent) -> io.NodeOutput:
        if not style:
            raise ValueError("style is an empty conditioning; expected at least one entry")
        diffusion_model = model.get_model_object("diffusion_model")
        unet = is_unet(diffusion_model)
        known = attention_blocks(diffusion_model) if unet else dit_blocks(diffusion_model)
        if known is None:
            raise ValueError(f"model is a {type(diffusion_model).__name__}; expected a UNet (SD1.5, SDXL, the "
                             "reference family), Flux or SD3 model")
        require_text_width(style[0][0], diffusion_model)
        preset = preset_blocks if unet else dit_preset_blocks
        chosen = {} if blocks == "custom" else {name: weight for name in preset(known, blocks)}
        chosen.update(parse_block_weights(block_weights, known, weight))
        if not chosen:
            raise ValueError("block_weights is empty with blocks = custom; expected block names such as "
                             f"{known[-1].name}, or a preset")
        window = sigma_window(model, start_percent, end_percent)
        patched = model.clone()
        if unet:
            keys = {block.key: chosen[block.name] for block in known if block.name in chosen}
            patched.set_model_attn2_patch(CrossAttentionMix(style[0][0], keys, window))
        else:
            patch_dit(patched, known, chosen, style[0][0], window)
        return io.NodeOutput(patched)


class LatentStyleMix(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_LatentStyleMix",
            display_name="Latent Style Mix (LSC)",
            category=FAMILY,
            description="Mix two latents directly: adain gives latent_a latent_b's per-channel mean and spread "
                        "(its overall colour and contrast), frequency keeps latent_a's layout and takes latent_b's "
                        "fine detail, channels takes chosen channels from latent_b. Any channel count, image or "
                        "video latents.",
            inputs=[
                io.Latent.Input("latent_a", tooltip="The latent to restyle: its structure is kept"),
                io.Latent.Input("latent_b", tooltip="The style source: same channels; batch equal to latent_a's "
                                                    "or 1; for frequency and channels also the same size"),
                io.Combo.Input("mode", options=list(LATENT_MODES), default="adain",
                               tooltip="adain: statistics (any size of latent_b); frequency: low frequencies from "
                                       "latent_a, high from latent_b; channels: the listed channels from latent_b"),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="0 gives latent_a, 1 the full mix"),
                io.Float.Input("cutoff", default=4.0, min=0.5, max=256.0, step=0.5,
                               tooltip="frequency: the period in latent cells (pixels ÷ 8 for most VAEs) that is "
                                       "half from each; larger shapes come from latent_a, finer detail from latent_b"),
                io.String.Input("channels", default="0",
                                tooltip="channels: indices or ranges from latent_b, e.g. '0, 2' or '4-7'"),
                io.Boolean.Input("per_frame", default=False,
                                 tooltip="adain on video latents: each frame's own statistics (keeps changes of "
                                         "light over time)"),
                io.Mask.Input("mask", optional=True,
                              tooltip="Mix only inside the mask (adain takes latent_a's statistics there); any "
                                      "resolution"),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="latent_a's dict with the mixed samples")],
        )

    @classmethod
    def execute(cls, latent_a, latent_b, mode, strength, cutoff, channels, per_frame, mask=None) -> io.NodeOutput:
        a, b = latent_a["samples"], latent_b["samples"]
        if mode == "adain":
            samples = style.adain(a, b, strength, mask, per_frame)
        elif mode == "frequency":
            samples = style.frequency_mix(a, b, cutoff, strength, mask)
        else:
            samples = style.channel_mix(a, b, parse_channels(channels, "channels"), strength, mask)
        return io.NodeOutput(new_latent(latent_a, samples))


class StyleAlign(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_StyleAlign",
            display_name="Style Align Batch (LSC)",
            category=FAMILY,
            description="Shared attention (StyleAligned): every picture of a batch also attends to the first "
                        "picture while it is drawn, so the batch shares one style. The first picture is unchanged. "
                        "UNet models: SD1.5, SDXL, the reference family.",
            inputs=[
                io.Model.Input("model", tooltip="The UNet model to patch (a patched copy is returned)"),
                io.Boolean.Input("normalise", default=True,
                                 tooltip="Give every picture's queries and keys the first picture's statistics "
                                         "(AdaIN) before they meet, as StyleAligned does"),
                *window_inputs(),
                io.Float.Input("strength", default=1.0, min=0.1, max=100.0, step=0.1,
                               tooltip="How much the first picture's tokens count against each picture's own (1: "
                                       "as in StyleAligned, equally; higher pulls harder towards it)"),
            ],
            outputs=[io.Model.Output(display_name="model",
                                     tooltip="The model with shared attention; sample a batch of 2 or more")],
        )

    @classmethod
    def validate_inputs(cls, start_percent, end_percent):
        return window_error(start_percent, end_percent) or True

    @classmethod
    def execute(cls, model, normalise, start_percent, end_percent, strength) -> io.NodeOutput:
        known = attention_blocks(model.get_model_object("diffusion_model"))
        window = sigma_window(model, start_percent, end_percent)
        patched = model.clone()
        shared = SharedSelfAttention(window, normalise, strength)
        for block in known:
            patched.set_model_attn1_replace(shared, *block.key)
        return io.NodeOutput(patched)


NODES = [StyleMix, StyleMixBlocks, LatentStyleMix, StyleAlign]
