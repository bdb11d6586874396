"""Bad input for every pack node, POSTed to a running ComfyUI: each case must be refused by the node given the bad
input, with a message naming that input and what was expected, and the server must keep answering."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "comfy"))
from test_interpolate_nodes import capture, interpolate_node, latent  # noqa: E402  (the pack's test helpers)

from latent_space_control.core.directions import Direction, save_direction  # noqa: E402


def n(class_type: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs}


def with_inputs(node: dict, **inputs) -> dict:
    return {**node, "inputs": {**node["inputs"], **inputs}}


def empty(width=64, height=64, batch=1):
    return n("EmptyLatentImage", width=width, height=height, batch_size=batch)


def cond_interp(a="ca", b="cb", **extra):
    values = dict(frames=2, t=0.5, t_start=0.0, t_end=1.0, method="slerp", easing="linear")
    values.update(extra)
    return n("LSC_ConditioningInterpolate", conditioning_a=[a, 0], conditioning_b=[b, 0], **values)


def clip_text(text: str):
    return n("CLIPTextEncode", text=text, clip=["ckpt", 1])


def sampler_graph(more_seeds: str, batch: int, seed_a: int = 123) -> dict:
    """Noise Travel feeding SamplerCustomAdvanced on the tiny checkpoint (2 steps, 8x8 latents)."""
    return {
        "ckpt": n("LSCTest_TinyCheckpoint", ckpt_name="tiny"),
        "pos": clip_text("a fox"), "neg": clip_text("blurry"),
        "noise": n("LSC_NoiseTravel", seed_a=seed_a, seed_b=456, easing="linear", more_seeds=more_seeds),
        "guider": n("CFGGuider", model=["ckpt", 0], positive=["pos", 0], negative=["neg", 0], cfg=5.0),
        "sampler": n("KSamplerSelect", sampler_name="euler"),
        "sigmas": n("BasicScheduler", model=["ckpt", 0], scheduler="normal", steps=2, denoise=1.0),
        "latent": empty(64, 64, batch),
        "sample": n("SamplerCustomAdvanced", noise=["noise", 0], guider=["guider", 0], sampler=["sampler", 0],
                    sigmas=["sigmas", 0], latent_image=["latent", 0]),
        "decode": n("VAEDecode", samples=["sample", 0], vae=["ckpt", 2]),
        "preview": n("PreviewImage", images=["decode", 0]),
    }


def cond_graph(**nodes) -> dict:
    graph = {"ckpt": n("LSCTest_TinyCheckpoint", ckpt_name="tiny"), "ca": clip_text("a fox"), "cb": clip_text("an owl")}
    graph.update(nodes)
    graph["ci"] = graph.get("ci") or cond_interp()
    graph["out"] = capture("ci", "bad")
    return graph


NAN, INF = float("nan"), float("inf")

# (name, prompt, expected stage ("validation", "execution" or "any"), id of the node that must report it, regexes the
# message must contain (case-insensitive): the input's name and "expected"/what was expected)
BAD_CASES = [
    ("LatentInterpolate: 4 vs 16 channels (EmptyLatentImage vs EmptySD3LatentImage)",
     {"a": empty(), "b": n("EmptySD3LatentImage", width=64, height=64, batch_size=1), "i": interpolate_node(),
      "o": capture("i", "bad")},
     "execution", "i", ["latent_b", "latent_a", "channels", "expected"]),
    ("LatentInterpolate: 64x64 vs 64x128 (EmptyLatentImage)",
     {"a": empty(64, 64), "b": empty(64, 128), "i": interpolate_node(), "o": capture("i", "bad")},
     "execution", "i", ["latent_b", "latent_a", "size", "expected"]),
    ("LatentInterpolate: image latent vs video latent (EmptyHunyuanLatentVideo)",
     {"a": empty(), "b": n("EmptyHunyuanLatentVideo", width=64, height=64, length=5, batch_size=1), "i": interpolate_node(),
      "o": capture("i", "bad")},
     "execution", "i", ["latent_b", "latent_a", "expected"]),
    ("LatentInterpolate: batch 2 vs batch 3",
     {"a": empty(batch=2), "b": empty(batch=3), "i": interpolate_node(), "o": capture("i", "bad")},
     "execution", "i", ["latent_a", "latent_b", "batch", "expected"]),
    ("LatentInterpolate: mask batch 2 (EmptyImage->ImageToMask) vs latents batch 3",
     {"a": empty(batch=3), "b": empty(batch=3), "img": n("EmptyImage", width=64, height=64, batch_size=2, color=0),
      "m": n("ImageToMask", image=["img", 0], channel="red"),
      "i": with_inputs(interpolate_node(), mask=["m", 0]), "o": capture("i", "bad")},
     "execution", "i", ["mask", "batch", "expected"]),
    ("LatentInterpolate: NaN latent from core LatentMultiply(multiplier=NaN)",
     {"r": latent(1),
      "a": n("LatentMultiply", samples=["r", 0], multiplier=NAN), "b": empty(), "i": interpolate_node(),
      "o": capture("i", "bad")},
     "execution", "i", ["latent_a", "nan", "expected"]),
    ("LatentInterpolate: one Inf value in latent_b (FCheck_PoisonLatent)",
     {"a": empty(), "e": empty(), "b": n("FCheck_PoisonLatent", latent=["e", 0], poison="inf"), "i": interpolate_node(),
      "o": capture("i", "bad")},
     "execution", "i", ["latent_b", "inf", "expected"]),
    ("LatentInterpolate: t = NaN (NaN passes ComfyUI's min/max check; a 2nd LatentInterpolate 'probe' checks the output)",
     {"a": latent(1),
      "b": latent(2),
      "i": interpolate_node(t=NAN), "probe": interpolate_node(a="i", b="b"), "o": capture("probe", "bad")},
     "any", "i", [r"\bt\b", "expected"]),
    ("LatentInterpolate: t = Infinity", {"a": empty(), "b": empty(), "i": interpolate_node(t=INF), "o": capture("i", "bad")},
     "any", "i", [r"\bt\b", "max|expected"]),
    ("LatentInterpolate: frames = 0", {"a": empty(), "b": empty(), "i": interpolate_node(frames=0), "o": capture("i", "bad")},
     "any", "i", ["frames", "min|expected"]),
    ("LatentInterpolate: method 'cubic' (not an option)",
     {"a": empty(), "b": empty(), "i": interpolate_node(method="cubic"), "o": capture("i", "bad")},
     "any", "i", ["method", "cubic", "expected|not in list"]),
    ("LatentKeyframes: batch of 1",
     {"a": empty(batch=1), "k": n("LSC_LatentKeyframes", keyframes=["a", 0], frames_per_segment=4, method="slerp",
                                   easing="linear", smooth=False), "o": capture("k", "bad")},
     "execution", "k", ["keyframes", "expected"]),
    ("LatentKeyframes: NaN in the keyframes (FCheck_PoisonLatent)",
     {"e": empty(batch=3), "a": n("FCheck_PoisonLatent", latent=["e", 0], poison="nan"),
      "k": n("LSC_LatentKeyframes", keyframes=["a", 0], frames_per_segment=4, method="slerp", easing="linear",
             smooth=True), "o": capture("k", "bad")},
     "execution", "k", ["keyframes", "nan", "expected"]),
    ("EmptyLatentForVAE: width 30 for the reference VAE (downscale 4)",
     {"ref": n("LSC_ReferenceModelLoader"),
      "e": n("LSC_EmptyLatentForVAE", vae=["ref", 2], width=30, height=32, batch_size=1), "o": capture("e", "bad")},
     "execution", "e", ["width", "multiple", r"\b4\b", "30", "expected"]),
    ("EmptyLatentForVAE: batch_size 0",
     {"ref": n("LSC_ReferenceModelLoader"),
      "e": n("LSC_EmptyLatentForVAE", vae=["ref", 2], width=32, height=32, batch_size=0), "o": capture("e", "bad")},
     "any", "e", ["batch_size", "min|expected"]),
    ("NoiseTravel: more_seeds '7, x'", sampler_graph("7, x", 3), "execution", "noise",
     ["more_seeds", "7, x", "expected"]),
    ("NoiseTravel: more_seeds '-1'", sampler_graph("-1", 3), "execution", "noise", ["more_seeds", "expected"]),
    ("NoiseTravel: 3 seeds (more_seeds '7') but EmptyLatentImage batch 2 -> SamplerCustomAdvanced",
     sampler_graph("7", 2), "execution", "sample", ["3 seeds", "batch", r"\b2\b", "expected"]),
    ("NoiseTravel: seed_a = -5", sampler_graph("", 2, seed_a=-5), "any", "noise", ["seed_a", "min|expected"]),
    ("ConditioningInterpolate: width 32 (tiny CLIP) vs 64 (FCheck_Conditioning)",
     cond_graph(cb=n("FCheck_Conditioning", width=64, tokens=77, seed=0, poison="none")),
     "execution", "ci", ["conditioning_b", "width", "conditioning_a", "expected"]),
    ("ConditioningInterpolate: around of width 48 (FCheck_Conditioning)",
     cond_graph(ar=n("FCheck_Conditioning", width=48, tokens=77, seed=0, poison="none"),
                ci=with_inputs(cond_interp(), around=["ar", 0])),
     "execution", "ci", ["around", "width", "expected"]),
    ("ConditioningInterpolate: 2 entries vs 3 entries (ConditioningCombine)",
     cond_graph(cc=clip_text("a cat"), a2=n("ConditioningCombine", conditioning_1=["ca", 0], conditioning_2=["cb", 0]),
                b2=n("ConditioningCombine", conditioning_1=["ca", 0], conditioning_2=["cb", 0]),
                b3=n("ConditioningCombine", conditioning_1=["b2", 0], conditioning_2=["cc", 0]),
                ci=cond_interp(a="a2", b="b3")),
     "execution", "ci", ["conditioning_a", "conditioning_b", "entries", "expected"]),
    ("ConditioningInterpolate: NaN in conditioning_b (FCheck_Conditioning)",
     cond_graph(cb=n("FCheck_Conditioning", width=32, tokens=77, seed=0, poison="nan")),
     "execution", "ci", ["conditioning_b", "nan", "expected"]),
]


# ---- direction nodes --------------------------------------------------------------------------------------------
# Files the Load Direction and Open CLIP Loader cases read; write_model_files puts them in the server's model folders.
NOT_A_DIRECTION = "fcheck_a_lora.safetensors"  # safetensors without a direction header
NOT_SAFETENSORS = "fcheck_broken.safetensors"  # not a safetensors file at all
NAN_DIRECTION = "fcheck_nan_direction.safetensors"  # a direction file whose vector holds NaN
NOT_OPEN_CLIP = "fcheck_not_open_clip.safetensors"  # safetensors that no open_clip architecture takes
REFERENCE_WEIGHTS = "reference (shipped with the pack)"
REFERENCE_CLIP = "LSC-Reference-CLIP"


def write_model_files(directions: Path, open_clip: Path) -> None:
    directions.mkdir(parents=True, exist_ok=True)
    open_clip.mkdir(parents=True, exist_ok=True)
    save_file({"lora_down.weight": torch.ones(2, 2)}, str(directions / NOT_A_DIRECTION))
    (directions / NOT_SAFETENSORS).write_bytes(b"not a tensor file")
    save_direction(directions / NAN_DIRECTION, Direction({"conditioning": torch.full((4, 32), float("nan"))}))
    save_file({"not.a.clip.weight": torch.ones(2, 2)}, str(open_clip / NOT_OPEN_CLIP))
    (directions / NOT_GGUF).write_bytes(b"not a control vector")


def tiny():
    return n("LSCTest_TinyCheckpoint", ckpt_name="tiny")


def from_clip(clip="ckpt", positive="blue", negative="red", templates="none", custom_templates="a {} thing"):
    """Direction from CLIP (LSC) on the CLIP of node ``clip`` (the tiny checkpoint's is 32-wide, the reference's
    64-wide); no templates: two prompts to encode."""
    return n("LSC_DirectionFromCLIP", clip=[clip, 1], positive=positive, negative=negative, templates=templates,
             custom_templates=custom_templates, space="both", normalise="none")


def from_latents(with_="lw", without="lo"):
    return n("LSC_DirectionFromLatents", latent_with=[with_, 0], latent_without=[without, 0])


def latent_direction():
    """A 4-channel latent direction: Direction from Latents of two LSCTest_Latent batches."""
    return {"lw": latent(1, batch=2), "lo": latent(2, batch=2), "ld": from_latents()}


def apply(direction="d", **connected):
    return n("LSC_ApplyDirection", direction=[direction, 0], strength=1.0, tokens="all_tokens", auto_scale=False,
             **connected)


def sweep(direction="d", steps=3, **connected):
    return n("LSC_DirectionSweep", direction=[direction, 0], start=-1.0, end=1.0, steps=steps, tokens="all_tokens",
             auto_scale=False, **connected)


def combine(a="d", operation="add", factor=1.0, b=None):
    return n("LSC_DirectionCombine", direction_a=[a, 0], operation=operation, factor=factor,
             **({"direction_b": [b, 0]} if b else {}))


def transfer(direction="d", anchors="a red circle\na blue square\na green triangle\na small yellow thing"):
    return n("LSC_DirectionTransfer", direction=[direction, 0], source_clip=["ckpt", 1], target_clip=["ckpt", 1],
             anchors=anchors)


def latent_from_clip(positive="blue", steps=2, lat=None):
    """Latent Direction from CLIP judged by the shipped reference CLIP, on the tiny checkpoint's VAE."""
    return {"oc": n("LSC_OpenCLIPLoader", architecture=REFERENCE_CLIP, weights=REFERENCE_WEIGHTS),
            "lat": lat or latent(3, batch=2),
            "lc": n("LSC_LatentDirectionFromCLIP", vae=["ckpt", 2], open_clip=["oc", 0], latent=["lat", 0],
                    positive=positive, negative="red", steps=steps, learning_rate=0.1, max_norm=1.5, keep=1.0)}


def probed(at: str, slot: int = 0, **nodes) -> dict:
    """The tiny checkpoint, ``nodes``, and a capture of node ``at``'s output (so it runs)."""
    return {"ckpt": tiny(), **nodes, "out": capture(at, "bad", slot)}


def load(file: str) -> dict:
    return {"l": n("LSC_LoadDirection", file=file), "out": capture("l", "bad")}


def open_clip(architecture: str, weights: str) -> dict:
    return {"oc": n("LSC_OpenCLIPLoader", architecture=architecture, weights=weights), "out": capture("oc", "bad")}


def poisoned_latents(batch: int) -> dict:
    """Node "nan": a batch of latents with one NaN value."""
    return {"clean": latent(5, batch=batch), "nan": n("FCheck_PoisonLatent", latent=["clean", 0], poison="nan")}


# The failing node's inputs are named in its messages as the node shows them, with what was expected.
BAD_CASES += [
    ("DirectionFromCLIP: positive of empty lines", probed("d", d=from_clip(positive="  \n\n")),
     "execution", "d", ["positive", "empty", "expected"]),
    ("DirectionFromCLIP: negative of empty lines", probed("d", d=from_clip(negative="\n ")),
     "execution", "d", ["negative", "empty", "expected"]),
    ("DirectionFromCLIP: positive and negative the same ('red')", probed("d", d=from_clip(positive="red")),
     "execution", "d", ["positive", "negative", "encode exactly alike", "expected"]),
    ("DirectionFromCLIP: templates custom, custom_templates empty",
     probed("d", d=from_clip(templates="custom", custom_templates=" \n")),
     "execution", "d", ["custom_templates", "empty", "expected"]),
    ("DirectionFromCLIP: templates custom, a custom template without {} ('a red thing')",
     probed("d", d=from_clip(templates="custom", custom_templates="a red thing\na {} painting")),
     "execution", "d", ["custom_templates", "a red thing", r"\{\}", "expected"]),
    ("LatentDirectionFromCLIP: positive empty", probed("lc", **latent_from_clip(positive=" \n")),
     "execution", "lc", ["positive", "empty", "expected"]),
    ("LatentDirectionFromCLIP: steps = 0", probed("lc", **latent_from_clip(steps=0)),
     "any", "lc", ["steps", "min|expected"]),
    ("LatentDirectionFromCLIP: steps = 2001 (max 2000)", probed("lc", **latent_from_clip(steps=2001)),
     "any", "lc", ["steps", "max|expected"]),
    ("LatentDirectionFromCLIP: a video latent (LSCTest_Latent length 3)",
     probed("lc", **latent_from_clip(lat=latent(3, batch=2, length=3))),
     "execution", "lc", ["latent", "image latents", "expected"]),
    ("DirectionFromLatents: NaN in latent_with (FCheck_PoisonLatent)",
     probed("d", **poisoned_latents(2), lo=latent(2, batch=2), d=from_latents("nan", "lo")),
     "execution", "d", ["latent_with", "nan", "expected"]),
    ("DirectionFromLatents: 4 vs 16 channels",
     probed("d", lw=latent(1, batch=2), lo=latent(2, batch=2, channels=16), d=from_latents()),
     "execution", "d", ["latent_with", "latent_without", "expected"]),
    ("DirectionFromLatents: latent_with alone",
     probed("d", lw=latent(1, batch=2), d=n("LSC_DirectionFromLatents", latent_with=["lw", 0])),
     "execution", "d", ["latent_without", "not connected", "expected"]),
    ("DirectionFromLatents: nothing connected", probed("d", d=n("LSC_DirectionFromLatents")),
     "execution", "d", ["latent_with", "conditioning_with", "connect"]),
    ("DirectionPCA: NaN in the latent batch (FCheck_PoisonLatent)",
     probed("p", **poisoned_latents(3), p=n("LSC_DirectionPCA", component=1, report=3, latent=["nan", 0])),
     "execution", "p", ["latent", "nan", "expected"]),
    ("DirectionPCA: component 5 of a batch of 3",
     probed("p", lw=latent(1, batch=3), p=n("LSC_DirectionPCA", component=5, report=3, latent=["lw", 0])),
     "execution", "p", ["component", r"\b5\b", "batch", "expected"]),
    ("DirectionPCA: nothing connected", probed("p", p=n("LSC_DirectionPCA", component=1, report=3)),
     "execution", "p", ["latent", "conditioning", "connect"]),
    ("ApplyDirection: a conditioning direction (Direction from CLIP) applied to a latent",
     probed("a", 1, d=from_clip(), lw=latent(1), a=apply(latent=["lw", 0])),
     "execution", "a", ["latent", "conditioning direction", "expected a latent direction"]),
    ("ApplyDirection: a latent direction (Direction from Latents) applied to a conditioning",
     probed("a", **latent_direction(), pos=clip_text("a fox"), a=apply("ld", conditioning=["pos", 0])),
     "execution", "a", ["conditioning", "latent direction", "expected a conditioning or pooled direction"]),
    ("ApplyDirection: neither conditioning nor latent connected", probed("a", d=from_clip(), a=apply()),
     "execution", "a", ["conditioning", "latent", "connect"]),
    ("ApplyDirection: a 64-wide reference direction on the tiny CLIP's 32-wide conditioning",
     probed("a", ref=n("LSC_ReferenceModelLoader"), d=from_clip("ref"), pos=clip_text("a fox"),
            a=apply(conditioning=["pos", 0])),
     "execution", "a", ["64-wide", "32-wide", "conditioning", "expected"]),
    ("ApplyDirection: a 4-channel latent direction on a 16-channel latent (EmptySD3LatentImage)",
     probed("a", 1, **latent_direction(), sd3=n("EmptySD3LatentImage", width=64, height=64, batch_size=1),
            a=apply("ld", latent=["sd3", 0])),
     "execution", "a", ["latent", r"\b4 channels", r"\b16\b", "expected"]),
    ("DirectionSweep: steps = 0", probed("s", d=from_clip(), pos=clip_text("a fox"),
                                         s=sweep(steps=0, conditioning=["pos", 0])),
     "any", "s", ["steps", "min|expected"]),
    ("DirectionSweep: a latent direction swept on a conditioning",
     probed("s", **latent_direction(), pos=clip_text("a fox"), s=sweep("ld", conditioning=["pos", 0])),
     "execution", "s", ["conditioning", "latent direction", "expected"]),
    ("DirectionCombine: normalise a zero direction (scale 0 first)",
     probed("c", d=from_clip(), z=combine(operation="scale", factor=0.0), c=combine("z", "normalise")),
     "execution", "c", ["direction_a", "zero norm", "expected"]),
    ("DirectionCombine: add without direction_b", probed("c", d=from_clip(), c=combine()),
     "execution", "c", ["direction_b", "add", "connect|expected"]),
    ("DirectionCombine: a conditioning direction plus a latent direction",
     probed("c", d=from_clip(), **latent_direction(), c=combine(b="ld")),
     "execution", "c", ["direction_a", "direction_b", "latent", "expected"]),
    ("DirectionTransfer: 2 anchors", probed("t", d=from_clip(), t=transfer(anchors="a red circle\n\na blue square")),
     "execution", "t", ["anchors", r"\b2\b", r"\b3\b", "expected"]),
    ("DirectionTransfer: a latent direction", probed("t", **latent_direction(), t=transfer("ld")),
     "execution", "t", ["direction", "latent", "expected"]),
    ("DirectionTransfer: a 64-wide reference direction from the tiny 32-wide source_clip",
     probed("t", ref=n("LSC_ReferenceModelLoader"), d=from_clip("ref"), t=transfer()),
     "execution", "t", ["source_clip", "64-wide", "32-wide", "expected"]),
    ("SaveDirection: filename_prefix '../x' (leaves models/latent_directions)",
     {"ckpt": tiny(), "d": from_clip(), "sv": n("LSC_SaveDirection", direction=["d", 0], filename_prefix="../x")},
     "execution", "sv", ["filename_prefix", r"\.\./x", "expected"]),
    ("SaveDirection: filename_prefix '/x' (an absolute path)",
     {"ckpt": tiny(), "d": from_clip(), "sv": n("LSC_SaveDirection", direction=["d", 0], filename_prefix="/x")},
     "execution", "sv", ["filename_prefix", "expected"]),
    ("SaveDirection: filename_prefix of spaces",
     {"ckpt": tiny(), "d": from_clip(), "sv": n("LSC_SaveDirection", direction=["d", 0], filename_prefix="  ")},
     "execution", "sv", ["filename_prefix", "expected"]),
    (f"LoadDirection: {NOT_A_DIRECTION} (safetensors, no direction header) in models/latent_directions",
     load(NOT_A_DIRECTION), "execution", "l", [rf"\bfile\b[^;]*{NOT_A_DIRECTION}", "direction", "expected"]),
    (f"LoadDirection: {NOT_SAFETENSORS} (not safetensors) in models/latent_directions",
     load(NOT_SAFETENSORS), "execution", "l", [rf"\bfile\b[^;]*{NOT_SAFETENSORS}", "safetensors", "expected"]),
    (f"LoadDirection: {NAN_DIRECTION} (a direction file holding NaN) in models/latent_directions",
     load(NAN_DIRECTION), "execution", "l", [rf"\bfile\b[^;]*{NAN_DIRECTION}", "nan", "expected"]),
    ("LoadDirection: a file that does not exist", load("fcheck_missing.safetensors"),
     "any", "l", ["file", "fcheck_missing", "not in list|expected"]),
    ("OpenCLIPLoader: weights that do not exist", open_clip(REFERENCE_CLIP, "fcheck_missing.safetensors"),
     "any", "oc", ["weights", "fcheck_missing", "not in list|expected"]),
    ("OpenCLIPLoader: the reference weights with architecture ViT-B-32", open_clip("ViT-B-32", REFERENCE_WEIGHTS),
     "execution", "oc", ["weights", "architecture", "ViT-B-32", "expected"]),
    (f"OpenCLIPLoader: {NOT_OPEN_CLIP} (tensors of no CLIP) in models/open_clip",
     open_clip(REFERENCE_CLIP, NOT_OPEN_CLIP), "execution", "oc", ["weights", NOT_OPEN_CLIP, "expected"]),
]



def style_blocks(block_weights="", blocks="style", start=0.0, end=1.0):
    return n("LSC_StyleMixBlocks", model=["ckpt", 0], style=["b", 0], blocks=blocks, weight=1.0,
             block_weights=block_weights, start_percent=start, end_percent=end)


def latent_mix(mode="adain", channels="0", a="la", b="lb"):
    return n("LSC_LatentStyleMix", latent_a=[a, 0], latent_b=[b, 0], mode=mode, strength=1.0, cutoff=4.0,
             channels=channels, per_frame=False)


BAD_CASES += [
    ("StyleMix: window = 2 (max 1)",
     probed("m", a=clip_text("a fox"), b=clip_text("an owl"),
            m=n("LSC_StyleMix", structure=["a", 0], style=["b", 0], cutoff=0.3, window=2.0)),
     "any", "m", ["window", "max|expected"]),
    ("StyleMixBlocks: block_weights names a block the UNet lacks ('input_99')",
     probed("s", b=clip_text("an owl"), s=style_blocks("input_99")),
     "execution", "s", ["block_weights", "input_99", "expected one of"]),
    ("StyleMixBlocks: a weight that is not a number ('output_1:strong')",
     probed("s", b=clip_text("an owl"), s=style_blocks("output_1:strong")),
     "execution", "s", ["block_weights", "strong", "expected a number"]),
    ("StyleMixBlocks: blocks custom with block_weights empty",
     probed("s", b=clip_text("an owl"), s=style_blocks(" ", blocks="custom")),
     "execution", "s", ["block_weights", "custom", "expected"]),
    ("StyleMixBlocks: end_percent 0.2 before start_percent 0.6",
     probed("s", b=clip_text("an owl"), s=style_blocks(start=0.6, end=0.2)),
     "validation", "s", ["end_percent", "start_percent", "expected"]),
    ("StyleAlign: end_percent 0.1 before start_percent 0.5",
     probed("s", s=n("LSC_StyleAlign", model=["ckpt", 0], normalise=True, start_percent=0.5, end_percent=0.1,
                     strength=1.0)),
     "validation", "s", ["end_percent", "start_percent", "expected"]),
    ("LatentStyleMix: 4 vs 16 channels", probed("m", la=latent(1), lb=latent(2, channels=16), m=latent_mix()),
     "execution", "m", ["latent_b", "latent_a", "channels", "expected"]),
    ("LatentStyleMix: frequency on 8x8 vs 8x16 latents",
     probed("m", la=latent(1), lb=latent(2, width=16), m=latent_mix("frequency")),
     "execution", "m", ["latent_b", "latent_a", "size", "expected"]),
    ("LatentStyleMix: batch 2 vs batch 3", probed("m", la=latent(1, batch=2), lb=latent(2, batch=3), m=latent_mix()),
     "execution", "m", ["latent_b", "batch", "expected"]),
    ("LatentStyleMix: channels 'red'", probed("m", la=latent(1), lb=latent(2), m=latent_mix("channels", "red")),
     "execution", "m", ["channels", "red", "expected"]),
    ("LatentStyleMix: channel 9 of a 4-channel latent",
     probed("m", la=latent(1), lb=latent(2), m=latent_mix("channels", "2, 9")),
     "execution", "m", ["channels", r"\b9\b", r"expected|0\.\.3"]),
    ("LatentStyleMix: NaN in latent_a (FCheck_PoisonLatent)",
     probed("m", **poisoned_latents(1), lb=latent(2), m=latent_mix(a="nan")),
     "execution", "m", ["latent_a", "nan", "expected"]),
]

# ---- optimisation nodes ------------------------------------------------------------------------------------------
def colour_objective(color="#20c020"):
    return n("LSC_ObjectiveColor", statistic="colour", color=color, value=0.5)


def latent_optimize(lat="lat", steps=2, decode_scale=1.0, smoothing=4.0):
    """Latent Optimize of node ``lat``'s latent on the tiny checkpoint's VAE, towards a colour (no CLIP)."""
    return n("LSC_LatentOptimize", latent=[lat, 0], vae=["ckpt", 2], objective=["obj", 0], steps=steps,
             learning_rate=0.1, optimiser="adam", regulariser="distance_to_start", regulariser_weight=0.0,
             gradient_penalty=0.0, decode_scale=decode_scale, early_stop=0.0, smoothing=smoothing)


def noise_optimize(lat="lat"):
    """Noise Optimize on the tiny checkpoint, one euler step, towards a colour."""
    return n("LSC_NoiseOptimize", model=["ckpt", 0], positive=["pos", 0], negative=["neg", 0], vae=["ckpt", 2],
             objective=["obj", 0], latent=[lat, 0], seed=1, sampler_steps=1, scheduler="simple", cfg=1.0,
             iterations=2, learning_rate=0.1, optimiser="adam", shell_weight=1.0, checkpointing=False)


def clip_text_objective(positive="green", views=8):
    return n("LSC_ObjectiveCLIPText", open_clip=["oc", 0], positive=positive, negative="red", views=views)


def optimised_noise_sampler(sampled_batch: int) -> dict:
    """Noise Optimize's NOISE (found for a batch of 1) fed to SamplerCustomAdvanced over a batch of ``sampled_batch``."""
    return {"ckpt": tiny(), "pos": clip_text("a fox"), "neg": clip_text(""), "obj": colour_objective(),
            "lat": empty(), "no": noise_optimize(), "other": empty(batch=sampled_batch),
            "guider": n("CFGGuider", model=["ckpt", 0], positive=["pos", 0], negative=["neg", 0], cfg=1.0),
            "sampler": n("KSamplerSelect", sampler_name="euler"),
            "sigmas": n("BasicScheduler", model=["ckpt", 0], scheduler="simple", steps=1, denoise=1.0),
            "sample": n("SamplerCustomAdvanced", noise=["no", 0], guider=["guider", 0], sampler=["sampler", 0],
                        sigmas=["sigmas", 0], latent_image=["other", 0]),
            "out": capture("sample", "bad")}


BAD_CASES += [
    ("ObjectiveCLIPText: positive of empty lines",
     probed("t", oc=n("LSC_OpenCLIPLoader", architecture=REFERENCE_CLIP, weights=REFERENCE_WEIGHTS),
            t=clip_text_objective(positive=" \n")),
     "execution", "t", ["positive", "empty", "expected"]),
    ("ObjectiveCLIPText: views = 0 (min 1)",
     probed("t", oc=n("LSC_OpenCLIPLoader", architecture=REFERENCE_CLIP, weights=REFERENCE_WEIGHTS),
            t=clip_text_objective(views=0)),
     "any", "t", ["views", "min|expected"]),
    ("ObjectiveReference: space latent with an image wired (EmptyImage)",
     probed("r", img=n("EmptyImage", width=32, height=32, batch_size=1, color=0),
            r=n("LSC_ObjectiveReference", space="latent", image=["img", 0])),
     "execution", "r", ["image", "space", "expected"]),
    ("ObjectiveReference: space image with a latent wired",
     probed("r", lat=latent(1), r=n("LSC_ObjectiveReference", space="image", latent=["lat", 0])),
     "execution", "r", ["latent", "space", "expected"]),
    ("ObjectiveColor: color 'greenish'", probed("c", c=colour_objective("greenish")),
     "execution", "c", ["color", "greenish", "expected"]),
    ("ObjectiveColor: color '300, 0, 0' (above 255)", probed("c", c=colour_objective("300, 0, 0")),
     "execution", "c", ["color", "300, 0, 0", "expected"]),
    ("ObjectiveDirection: a conditioning direction (Direction from CLIP)",
     probed("o", d=from_clip(), o=n("LSC_ObjectiveDirection", direction=["d", 0], amount=1.0)),
     "execution", "o", ["direction", "no latent part", "expected"]),
    ("ObjectiveConstraint: a constraint constrained again (no terms left)",
     probed("c2", obj=colour_objective(), c1=n("LSC_ObjectiveConstraint", objective=["obj", 0], threshold=0.1),
            c2=n("LSC_ObjectiveConstraint", objective=["c1", 0], threshold=0.1)),
     "execution", "c2", ["objective", "no terms", "expected"]),
    ("LatentOptimize: steps = 0", probed("lo", obj=colour_objective(), lat=empty(), lo=latent_optimize(steps=0)),
     "any", "lo", ["steps", "min|expected"]),
    ("LatentOptimize: decode_scale = 0.05 (min 0.125)",
     probed("lo", obj=colour_objective(), lat=empty(), lo=latent_optimize(decode_scale=0.05)),
     "any", "lo", ["decode_scale", "min|expected"]),
    ("LatentOptimize: smoothing = -1 (min 0)",
     probed("lo", obj=colour_objective(), lat=empty(), lo=latent_optimize(smoothing=-1.0)),
     "any", "lo", ["smoothing", "min|expected"]),
    ("LatentOptimize: a 16-channel latent (EmptySD3LatentImage) for the tiny 4-channel VAE",
     probed("lo", obj=colour_objective(), lat=n("EmptySD3LatentImage", width=64, height=64, batch_size=1),
            lo=latent_optimize()),
     "execution", "lo", ["latent", r"\b16\b", "vae", "expected"]),
    ("LatentOptimize: a video latent (LSCTest_Latent length 3)",
     probed("lo", obj=colour_objective(), lat=latent(1, length=3), lo=latent_optimize()),
     "execution", "lo", ["latent", "image latents", "expected"]),
    ("LatentOptimize: NaN in the latent (FCheck_PoisonLatent)",
     probed("lo", obj=colour_objective(), **poisoned_latents(1), lo=latent_optimize("nan")),
     "execution", "lo", ["latent", "nan", "expected"]),
    ("NoiseOptimize: a 16-channel latent (EmptySD3LatentImage) for the tiny 4-channel VAE",
     probed("no", pos=clip_text("a fox"), neg=clip_text(""), obj=colour_objective(),
            lat=n("EmptySD3LatentImage", width=64, height=64, batch_size=1), no=noise_optimize()),
     "execution", "no", ["latent", r"\b16\b", "vae", "expected"]),
    ("NoiseOptimize: its NOISE (batch 1) into SamplerCustomAdvanced over a batch of 2",
     optimised_noise_sampler(2), "execution", "sample", ["noise", "latent", "expected"]),
]


# ---- steering nodes -----------------------------------------------------------------------------------------------
NOT_GGUF = "fcheck_not_gguf.gguf"  # a .gguf name over bytes that are not GGUF
REFERENCE_LM = "reference (built-in)"


def steer_vector(clip="ckpt", positive="red", negative="blue", encoder="auto", layers="auto"):
    """Steer Vector from Prompts on the CLIP of node ``clip`` (the tiny checkpoint's: 32-wide, 2 blocks; the
    reference's: 64-wide)."""
    return n("LSC_SteerVectorFromPrompts", clip=[clip, 1], positive=positive, negative=negative, templates="none",
             custom_templates="a {} thing", encoder=encoder, layers=layers, method="mean_difference")


def text_steer(direction="v", clip="ckpt", layers="", positions="all"):
    return n("LSC_TextSteer", clip=[clip, 1], direction=[direction, 0], strength=1.0, layers=layers,
             token_positions=positions)


def steer_generate(layers="auto", max_new_tokens=8, positive="look, a happy small red circle on the left.",
                   negative="alas, a dull small red circle on the left.", direction=None):
    inputs = dict(lm=["lm", 0], prompt="a", strength=1.5, layers=layers, method="mean_difference",
                  max_new_tokens=max_new_tokens, temperature=1.0, top_p=1.0, seed=1, include_prompt=False,
                  positive_examples=positive, negative_examples=negative)
    if direction is not None:
        inputs["direction"] = [direction, 0]
    return n("LSC_TextSteerGenerate", **inputs)


def lm_loader(model=REFERENCE_LM):
    return n("LSC_CausalLMLoader", model=model, dtype="auto")


BAD_CASES += [
    ("SteerVectorFromPrompts: positive of empty lines", probed("v", v=steer_vector(positive=" \n ")),
     "execution", "v", ["positive", "empty", "expected"]),
    ("SteerVectorFromPrompts: layers 9 on the tiny 2-block CLIP", probed("v", v=steer_vector(layers="9")),
     "execution", "v", ["layers", r"\b9\b", "clip_l has 2 blocks"]),
    ("SteerVectorFromPrompts: encoder t5xxl on an SD1.5 CLIP", probed("v", v=steer_vector(encoder="t5xxl")),
     "execution", "v", ["encoder", "t5xxl", "clip_l", "expected"]),
    ("TextSteer: a conditioning direction (Direction from CLIP)",
     probed("s", d=from_clip(), s=text_steer(direction="d")), "execution", "s", ["direction", "hidden", "expected"]),
    ("TextSteer: layers 7 on the tiny 2-block CLIP", probed("s", v=steer_vector(), s=text_steer(layers="7")),
     "execution", "s", ["layers", r"\b7\b", "clip_l has 2 blocks"]),
    ("TextSteer: a vector of the 64-wide reference CLIP on the 32-wide tiny CLIP",
     probed("s", ref=n("LSC_ReferenceModelLoader"), v=steer_vector(clip="ref"), s=text_steer()),
     "execution", "s", ["direction", "64-wide", "32-wide", "expected"]),
    ("CausalLMLoader: a model folder that is not there",
     {"lm": lm_loader("x_missing_model"), "out": capture("lm", "bad")}, "any", "lm", ["model", "x_missing_model"]),
    ("TextSteerGenerate: no direction and no negative examples",
     {"lm": lm_loader(), "g": steer_generate(negative=""), "out": capture("g", "bad")},
     "execution", "g", ["negative_examples", "empty", "expected"]),
    ("TextSteerGenerate: layers 5 on the 2-block reference LM",
     {"lm": lm_loader(), "g": steer_generate(layers="5"), "out": capture("g", "bad")},
     "execution", "g", ["layers", r"\b5\b", "2 blocks"]),
    ("TextSteerGenerate: max_new_tokens 40 past the reference LM's 32 positions",
     {"lm": lm_loader(), "g": steer_generate(max_new_tokens=40), "out": capture("g", "bad")},
     "execution", "g", ["max_new_tokens", r"\b32\b", "expected"]),
    ("TextSteerGenerate: a text-encoder direction (Steer Vector from Prompts)",
     {"ckpt": tiny(), "v": steer_vector(), "lm": lm_loader(),
      "g": steer_generate(direction="v", positive="", negative=""), "out": capture("g", "bad")},
     "execution", "g", ["direction", "text encoder", "expected"]),
    ("SaveControlVector: a vector for block 0 (llama.cpp cannot steer it)",
     {"lm": lm_loader(), "g": steer_generate(layers="0"),
      "s": n("LSC_SaveControlVector", direction=["g", 2], filename_prefix="x_block0", model_hint="")},
     "execution", "s", ["block 0", "llama.cpp"]),
    ("SaveControlVector: filename_prefix leaving the folder (../x_escape)",
     {"lm": lm_loader(), "g": steer_generate(layers="1"),
      "s": n("LSC_SaveControlVector", direction=["g", 2], filename_prefix="../x_escape", model_hint="")},
     "execution", "s", ["filename_prefix", "expected"]),
    ("LoadControlVector: a .gguf file that is not GGUF",
     {"l": n("LSC_LoadControlVector", file=NOT_GGUF), "out": capture("l", "bad")},
     "execution", "l", [NOT_GGUF, "not a GGUF"]),
]



# ---- guidance and noise injection -----------------------------------------------------------------------------------

def guided(start=0.0, end=1.0, strength=0.5, vae=True):
    """Guided Noise Inject on the tiny checkpoint with a CLIP text objective (the reference open_clip)."""
    inputs = dict(model=["ckpt", 0], objective=["obj", 0], strength=strength, start_percent=start, end_percent=end,
                  schedule="constant", mode="x0", decode_scale=1.0)
    return n("LSC_GuidedNoiseInject", **inputs, **({"vae": ["ckpt", 2]} if vae else {}))


def guided_probe(**guided_inputs) -> dict:
    return probed("g", oc=n("LSC_OpenCLIPLoader", architecture=REFERENCE_CLIP, weights=REFERENCE_WEIGHTS),
                  obj=clip_text_objective(), g=guided(**guided_inputs))


def noise_inject(steps="", start=0.0, end=1.0, amount=0.5):
    return n("LSC_NoiseInject", model=["ckpt", 0], amount=amount, seed=1, start_percent=start, end_percent=end,
             steps=steps)


def directional_noise(direction="d"):
    return n("LSC_DirectionalNoise", direction=[direction, 0], seed=1, strength=4.0)


BAD_CASES += [
    ("GuidedNoiseInject: a CLIP objective with no vae", guided_probe(vae=False), "execution", "g",
     ["vae", "expected"]),
    ("GuidedNoiseInject: end_percent 0.2 before start_percent 0.6", guided_probe(start=0.6, end=0.2),
     "validation", "g", ["end_percent", "start_percent", "expected"]),
    ("GuidedNoiseInject: strength 20 (max 10)", guided_probe(strength=20.0), "validation", "g",
     ["strength", "max|expected"]),
    ("NoiseInject: steps '2,x'", probed("ni", ni=noise_inject("2,x")), "execution", "ni",
     ["steps", "2,x", "expected"]),
    ("NoiseInject: steps '7-5' runs backwards", probed("ni", ni=noise_inject("7-5")), "execution", "ni",
     ["steps", "7-5", "expected"]),
    ("NoiseInject: amount 2 (max 1)", probed("ni", ni=noise_inject(amount=2.0)), "any", "ni",
     ["amount", "max|expected"]),
    ("NoiseInject: end_percent 0.2 before start_percent 0.7", probed("ni", ni=noise_inject(start=0.7, end=0.2)),
     "validation", "ni", ["end_percent", "start_percent", "expected"]),
    ("DirectionalNoise: a conditioning direction (Direction from CLIP)",
     probed("dn", d=from_clip(), dn=directional_noise()),
     "execution", "dn", ["direction", "conditioning", "expected a latent"]),
    ("DirectionalNoise: 4-channel direction, 16-channel latent (reported by the sampler that draws the noise)",
     {"ckpt": tiny(), "pos": clip_text("a fox"), "neg": clip_text(""), "a": latent(1), "b": latent(2),
      "d": n("LSC_DirectionFromLatents", latent_with=["a", 0], latent_without=["b", 0]), "dn": directional_noise(),
      "lat": latent(3, channels=16),
      "guider": n("CFGGuider", model=["ckpt", 0], positive=["pos", 0], negative=["neg", 0], cfg=1.0),
      "sampler": n("KSamplerSelect", sampler_name="euler"),
      "sigmas": n("BasicScheduler", model=["ckpt", 0], scheduler="simple", steps=1, denoise=1.0),
      "sample": n("SamplerCustomAdvanced", noise=["dn", 0], guider=["guider", 0], sampler=["sampler", 0],
                  sigmas=["sigmas", 0], latent_image=["lat", 0]), "out": capture("sample", "bad")},
     "execution", "sample", ["direction", r"\b4\b", r"\b16\b", "expected"]),
]


def semantic_guidance(model="ckpt", concept="concept", start=0.0, end=1.0, scale=7.5):
    return n("LSC_SemanticGuidance", model=[model, 0], concept=[concept, 0], direction="add", scale=scale,
             threshold=0.5, start_percent=start, end_percent=end, momentum_scale=0.0, momentum_beta=0.6)


def guided_ksampler(**nodes) -> dict:
    """Semantic Guidance (node "g", from ``nodes``) feeding a KSampler (node "k") on the tiny checkpoint, 2 steps."""
    return {"ckpt": tiny(), "pos": clip_text("a fox"), "neg": clip_text("blurry"), "latent": empty(), **nodes,
            "k": n("KSampler", model=["g", 0], positive=["pos", 0], negative=["neg", 0], latent_image=["latent", 0],
                   seed=1, steps=2, cfg=5.0, sampler_name="euler", scheduler="karras", denoise=1.0),
            "out": capture("k", "bad")}


BAD_CASES += [
    ("SemanticGuidance: end_percent 0.2 before start_percent 0.6",
     probed("g", concept=clip_text("red"), g=semantic_guidance(start=0.6, end=0.2)),
     "validation", "g", ["end_percent", "start_percent", "expected"]),
    ("SemanticGuidance: scale -1 (min 0)", probed("g", concept=clip_text("red"), g=semantic_guidance(scale=-1.0)),
     "validation", "g", ["scale", "min|expected"]),
    # The concept's width can only be compared with the prompt's once the sampler holds both: KSampler reports it,
    # naming the Semantic Guidance concept.
    ("SemanticGuidance: a concept of the 64-wide reference CLIP on the tiny 32-wide prompt (reported by KSampler)",
     guided_ksampler(ref=n("LSC_ReferenceModelLoader"), concept=n("CLIPTextEncode", text="red", clip=["ref", 1]),
                     g=semantic_guidance()),
     "execution", "k", ["concept", "64-wide", "32-wide", "expected"]),
    ("SemanticGuidance: BasicGuider, no negative to guide from (reported by SamplerCustomAdvanced)",
     {"ckpt": tiny(), "pos": clip_text("a fox"), "concept": clip_text("red"), "g": semantic_guidance(),
      "guider": n("BasicGuider", model=["g", 0], conditioning=["pos", 0]),
      "noise": n("RandomNoise", noise_seed=1), "sampler": n("KSamplerSelect", sampler_name="euler"),
      "sigmas": n("BasicScheduler", model=["g", 0], scheduler="karras", steps=2, denoise=1.0), "latent": empty(),
      "sample": n("SamplerCustomAdvanced", noise=["noise", 0], guider=["guider", 0], sampler=["sampler", 0],
                  sigmas=["sigmas", 0], latent_image=["latent", 0]),
      "out": capture("sample", "bad")},
     "execution", "sample", ["negative", "BasicGuider", "expected"]),
]

def run_bad_inputs(server, record, directions: Path, open_clip: Path) -> list[dict]:
    """Runs every case on ``server`` (a comfy_http.Server), calls ``record(check, ok, detail)`` per case and returns
    one row per case for the summary. ``directions`` and ``open_clip`` are the server's models/latent_directions and
    models/open_clip, where the files the Load Direction and Open CLIP Loader cases read are written first."""
    write_model_files(directions, open_clip)
    models = directions.parent
    before = {str(p) for p in models.rglob("*")}
    rows = []
    for name, prompt, stage, at, words in BAD_CASES:
        result = server.run(prompt, timeout=120)
        message, where = result.get("message", ""), result.get("node_ids") or []
        if result["ok"]:
            verdict, why = False, "no error: the bad input was accepted"
        elif stage != "any" and result["stage"] != stage:
            verdict, why = False, f"error at {result['stage']}, expected at {stage}"
        elif at not in where:
            verdict, why = False, (f"reported by node {where} ({result.get('node_type')}), not by the node given the "
                                   f"bad input ({at}): the bad input passed through it")
        else:
            missing = [w for w in words if not re.search(w, message, re.IGNORECASE)]
            verdict, why = not missing, ("" if not missing else f"message lacks {missing}")
        alive = server.alive()
        rows.append({"case": name, "stage": result["stage"], "node_ids": where, "node_type": result.get("node_type"),
                     "exception_type": result.get("exception_type"), "message": message, "pass": verdict and alive,
                     "why": why if alive else (why + "; server not answering afterwards")})
        record(f"bad input: {name}", verdict and alive,
               f"[{result['stage']}{' in ' + str(result['node_type']) if result.get('node_type') else ''}] {message}"
               + (f"  <- {why}" if why else ""))
    escaped = sorted({str(p) for p in models.rglob("*")} - before) + [str(p) for p in Path("/").glob("x_*.safetensors")]
    record("bad input: nothing written by the refused Save Direction cases", not escaped, ", ".join(escaped))
    return rows


def nearest_node(metric="latent_l2", top_k=0, **wired):
    return n("LSC_LatentNearest", metric=metric, top_k=top_k, **wired)


def red_pictures(width=32, height=32, batch=2):
    return n("EmptyImage", width=width, height=height, batch_size=batch, color=0xFF0000)


BAD_CASES += [
    ("LatentNearest: neither latent nor image connected",
     {"q": latent(1), "near": nearest_node(query_latent=["q", 0]), "o": capture("near", "bad")},
     "execution", "near", ["latent", "image", "expected"]),
    ("LatentNearest: clip_cosine without open_clip",
     {"img": red_pictures(), "near": nearest_node("clip_cosine", image=["img", 0], query_image=["img", 0]),
      "o": capture("near", "bad")},
     "execution", "near", ["open_clip", "clip_cosine", "expected"]),
    ("LatentNearest: pictures ranked by latent_l2 without a vae",
     {"img": red_pictures(), "q": latent(1), "near": nearest_node(image=["img", 0], query_latent=["q", 0]),
      "o": capture("near", "bad")},
     "execution", "near", ["image", "vae", "expected"]),
    ("LatentNearest: query latent 4x4 against a batch of 8x8 latents",
     {"b": latent(1, 5), "q": latent(2, 1, height=4, width=4),
      "near": nearest_node(latent=["b", 0], query_latent=["q", 0]), "o": capture("near", "bad")},
     "execution", "near", ["query_latent", r"\(4, 4, 4\)", r"\(4, 8, 8\)", "expected"]),
    ("LatentNearest: top_k 6 for a batch of 5",
     {"b": latent(1, 5), "near": nearest_node(top_k=6, latent=["b", 0], query_latent=["b", 0]),
      "o": capture("near", "bad")},
     "execution", "near", ["top_k", r"\b6\b", r"\b5\b", "expected"]),
    ("LatentNearest: top_k -1", {"b": latent(1, 5), "near": nearest_node(top_k=-1, latent=["b", 0],
                                                                         query_latent=["b", 0]),
                                 "o": capture("near", "bad")},
     "validation", "near", ["top_k", "min|expected"]),
    ("LatentNearest: latent_cosine on all-zero latents (EmptyLatentImage)",
     {"b": empty(64, 64, 2), "q": latent(1),
      "near": nearest_node("latent_cosine", latent=["b", 0], query_latent=["q", 0]), "o": capture("near", "bad")},
     "execution", "near", ["latent", "zeros", "expected"]),
    ("ReconstructionScore: a 6x16 picture for the tiny checkpoint's VAE (downscale 8)",
     {"ckpt": tiny(), "img": n("EmptyImage", width=6, height=16, batch_size=1, color=0),
      "r": n("LSC_ReconstructionScore", image=["img", 0], vae=["ckpt", 2], error="squared"), "o": capture("r", "bad")},
     "execution", "r", ["image", "6×16", r"\b8\b", "expected"]),
    # ComfyUI 0.3.64 lets an unknown combo value of a V3 node through validation; the node refuses it.
    ("ReconstructionScore: error 'cubic' (not an option)",
     {"ckpt": tiny(), "img": n("EmptyImage", width=64, height=64, batch_size=1, color=0),
      "r": n("LSC_ReconstructionScore", image=["img", 0], vae=["ckpt", 2], error="cubic"), "o": capture("r", "bad")},
     "any", "r", ["error", "cubic", "expected|not in list"]),
]


def latent_scan(lat="lat", mode="channel", channel=0, start=-1.0, end=1.0, steps=3, **wired):
    return n("LSC_LatentScan", latent=[lat, 0], mode=mode, channel=channel, start=start, end=end, steps=steps, **wired)


BAD_CASES += [
    ("LatentScan: channel 4 of a 4-channel latent", probed("s", lat=latent(1), s=latent_scan(channel=4)),
     "execution", "s", ["channel", r"\b4 channels", "expected"]),
    ("LatentScan: mode direction, no direction connected", probed("s", lat=latent(1), s=latent_scan(mode="direction")),
     "execution", "s", ["mode", "direction", "not connected"]),
    ("LatentScan: a conditioning direction (Direction from CLIP)",
     probed("s", d=from_clip(), lat=latent(1), s=latent_scan(mode="direction", direction=["d", 0])),
     "execution", "s", ["direction", "latent direction", "expected"]),
    ("LatentScan: start = end", probed("s", lat=latent(1), s=latent_scan(start=1.0, end=1.0)),
     "any", "s", ["start", "end", "expected"]),
    ("LatentScan: steps = 1", probed("s", lat=latent(1), s=latent_scan(steps=1)),
     "any", "s", ["steps", "min|expected"]),
    ("LatentScan: NaN latent, direction mode",
     probed("s", **poisoned_latents(2), **latent_direction(), s=latent_scan("nan", "direction", direction=["ld", 0])),
     "execution", "s", ["latent", "nan", "expected"]),
    ("LatentScan: empty latent, channel mode, no model", probed("s", e=empty(), s=latent_scan("e")),
     "execution", "s", ["channel", "latent", "constant", "model"]),
    ("LatentStats: NaN latent", probed("st", **poisoned_latents(2), st=n("LSC_LatentStats", latent=["nan", 0])),
     "execution", "st", ["latent", "nan", "expected"]),
    ("LatentStats: 16-channel latent with the 4-channel model",
     probed("st", lat=latent(1, channels=16), st=n("LSC_LatentStats", latent=["lat", 0], model=["ckpt", 0])),
     "execution", "st", ["model", "latent", r"\b16\b", "expected"]),
]


def attribute_correlation(lat="lat", scores="1, 2, 3, 4", **wired):
    return n("LSC_AttributeCorrelation", latent=[lat, 0], scores=scores, components=2, decode_scale=1.0, **wired)


BAD_CASES += [
    ("AttributeCorrelation: 3 scores for a batch of 4",
     probed("ac", lat=latent(1, batch=4), ac=attribute_correlation(scores="1, 2, 3")),
     "execution", "ac", ["scores", r"\b3 scores", r"\b4\b", "expected"]),
    ("AttributeCorrelation: a word among the scores", probed("ac", lat=latent(1, batch=4),
                                                             ac=attribute_correlation(scores="1, 2, red, 4")),
     "validation", "ac", ["scores", "red", "not a number", "expected"]),
    ("AttributeCorrelation: every score the same",
     probed("ac", lat=latent(1, batch=4), ac=attribute_correlation(scores="1 1 1 1")),
     "execution", "ac", ["scores", "same", "expected"]),
    ("AttributeCorrelation: a batch of 2", probed("ac", lat=latent(1, batch=2),
                                                  ac=attribute_correlation(scores="0, 1")),
     "execution", "ac", ["latent", r"\b2\b", "at least 3"]),
    ("AttributeCorrelation: no scores and no objective",
     probed("ac", lat=latent(1, batch=4), ac=attribute_correlation(scores="")),
     "execution", "ac", ["scores", "objective", "expected"]),
    ("AttributeCorrelation: an objective without a vae",
     probed("ac", lat=latent(1, batch=4), obj=colour_objective(), ac=attribute_correlation(scores="",
                                                                                          objective=["obj", 0])),
     "execution", "ac", ["objective", "vae", "expected"]),
    ("AttributeCorrelation: 16-channel latents with the tiny checkpoint's 4-channel vae",
     probed("ac", lat=latent(1, batch=4, channels=16), obj=colour_objective(),
            ac=attribute_correlation(scores="", objective=["obj", 0], vae=["ckpt", 2])),
     "execution", "ac", ["latent", r"\b16\b", r"\b4-channel", "expected"]),
]
