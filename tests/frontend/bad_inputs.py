"""Bad input for every pack node, POSTed to a running ComfyUI: each case must be refused by the node given the bad
input, with a message naming that input and what was expected, and the server must keep answering."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "comfy"))
from test_interpolate_nodes import capture, interpolate_node, latent  # noqa: E402  (the pack's test helpers)


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


def run_bad_inputs(server, record) -> list[dict]:
    """Runs every case on ``server`` (a comfy_http.Server), calls ``record(check, ok, detail)`` per case and returns
    one row per case for the summary."""
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
    return rows
