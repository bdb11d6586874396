"""Speed of the engine against the plain PyTorch baseline, measured side by side in one run: slerp against
`torch.lerp`; a text direction from every templated prompt in one batched encode against one encode per prompt; and,
where COMFYUI_PATH names a ComfyUI, ComfyUI's KSampler on the reference model patched by Style Mix by Block and by
Style Align Batch against the unpatched model (on the CPU, where the tests' harness runs ComfyUI); a Latent
Optimize step through the engine against the same step written by hand; the peak memory of a Noise Optimize
iteration with gradient checkpointing against without; a causal LM writing with a steering vector against without;
and, with ComfyUI, CLIPTextEncode on a Text Steer clone against the plain CLIP, KSampler on a model guided by
Guided Noise Inject (x0 and exact mode) against the plain model, and Semantic Guidance's concepts batched with the
prompt against one model call per concept.

[COMFYUI_PATH=/path/to/ComfyUI] python benchmarks/perf.py [--json]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from _bootstrap import load_pack, report
from comfy_fidelity import captured_values
from _analysis_correlation_bench import perf_figures as analysis_correlation_perf_figures
from _analysis_retrieval_bench import perf_figures as analysis_retrieval_perf_figures
from _guidance_bench import guidance_perf_figures
from _sega_bench import sega_perf_figures

load_pack()
from latent_space_control.core.adapters import open_clip_text_encoder  # noqa: E402
from latent_space_control.core.directions import TEMPLATES, text_direction  # noqa: E402
from latent_space_control.core.interpolation import interpolate  # noqa: E402
from latent_space_control.core import objectives  # noqa: E402
from latent_space_control.core.optimize import optimise  # noqa: E402
from latent_space_control.core import steering  # noqa: E402
from latent_space_control.reference import models, world  # noqa: E402


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def compare(ours, baseline, device, repeats: int) -> tuple[float, float]:
    """Median seconds of each, warmed up, the two interleaved so that drifting machine load hits both alike."""
    for fn in (ours, baseline):
        fn()
    ours_times, baseline_times = [], []
    for _ in range(repeats):
        ours_times.append(timed(ours, device))
        baseline_times.append(timed(baseline, device))
    return statistics.median(ours_times), statistics.median(baseline_times)


def interpolation_figures(device) -> dict:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(64, 16, 128, 128, generator=generator).to(device)
    b = torch.randn(64, 16, 128, 128, generator=generator).to(device)
    slerp, lerp = compare(lambda: interpolate(a, b, 0.5, "slerp"), lambda: torch.lerp(a, b, 0.5), device, repeats=25)
    return {"interp_slerp_vs_lerp_time": slerp / lerp, "interp_slerp_seconds": slerp, "interp_lerp_seconds": lerp}


PAIRS = 64


def prompt_pairs(count: int) -> tuple[list[str], list[str]]:
    """``count`` distinct prompts naming a blue shape, and the same prompts naming a red one."""
    red = sorted({scene.prompt(named) for scene in models.every_scene() if scene.colour == "red"
                  for named in models.named_subsets() if "colour" in named})[:count]
    return [prompt.replace("red", "blue") for prompt in red], red


def one_prompt_at_a_time(encode):
    """The same encoder called once per prompt, its outputs stacked."""

    def encode_each(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = [encode([prompt]) for prompt in prompts]
        return torch.cat([tokens for tokens, _ in outputs]), torch.cat([pooled for _, pooled in outputs])

    return encode_each


@torch.inference_mode()
def direction_perf_figures(device) -> dict:
    family = models.load()
    encode = open_clip_text_encoder(family.clip.to(device), family.clip_tokenizer)
    positive, negative = prompt_pairs(PAIRS)
    batched = text_direction(encode, positive, negative, TEMPLATES)
    sequential = text_direction(one_prompt_at_a_time(encode), positive, negative, TEMPLATES)
    for space in batched:  # the same direction either way, up to float summation order
        torch.testing.assert_close(batched[space], sequential[space], rtol=1e-4, atol=1e-4)
    ours, baseline = compare(lambda: text_direction(encode, positive, negative, TEMPLATES),
                             lambda: text_direction(one_prompt_at_a_time(encode), positive, negative, TEMPLATES),
                             device, repeats=3)
    return {"dir_prompts_encoded": 2 * len(positive) * len(TEMPLATES),
            "dir_batched_vs_sequential_speedup": baseline / ours, "dir_batched_seconds": ours,
            "dir_sequential_seconds": baseline}


# Large enough that the sampler's work, not its fixed cost, is timed: 16x16 latents, a batch of 4, 20 steps.
STYLE_PICTURE_SIZE, STYLE_BATCH, STYLE_STEPS = 64, 4, 20


def style_perf_figures(comfy) -> dict:
    """KSampler (euler, karras, cfg 4) with the model patched by Style Mix by Block (its defaults: the style preset)
    and by Style Align Batch (its defaults), each against the unpatched model; the nodes' outputs come from one
    executed prompt, and the KSampler node itself is timed on them."""
    loader = ["loader", 0]
    nodes = {
        "loader": {"class_type": "LSC_ReferenceModelLoader", "inputs": {}},
        "positive": {"class_type": "CLIPTextEncode", "inputs": {
            "clip": ["loader", 1], "text": "a large red circle in the middle, white background"}},
        "negative": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": ""}},
        "style": {"class_type": "CLIPTextEncode", "inputs": {
            "clip": ["loader", 1], "text": "a large blue square in the middle, white background"}},
        "latent": {"class_type": "LSC_EmptyLatentForVAE", "inputs": {
            "vae": ["loader", 2], "width": STYLE_PICTURE_SIZE, "height": STYLE_PICTURE_SIZE,
            "batch_size": STYLE_BATCH}},
        "blocks": {"class_type": "LSC_StyleMixBlocks", "inputs": {
            "model": loader, "style": ["style", 0], "blocks": "style", "weight": 1.0, "block_weights": "",
            "start_percent": 0.0, "end_percent": 1.0}},
        "align": {"class_type": "LSC_StyleAlign", "inputs": {
            "model": loader, "normalise": True, "start_percent": 0.0, "end_percent": 1.0, "strength": 1.0}},
    }
    slots = {"plain": loader, "blocks": ["blocks", 0], "align": ["align", 0], "positive": ["positive", 0],
             "negative": ["negative", 0], "latent": ["latent", 0]}
    made = captured_values(comfy, nodes, slots)
    ksampler = comfy.node_class("KSampler")()

    def sample(model):
        def run():
            with torch.inference_mode():  # as ComfyUI's executor runs every node
                ksampler.sample(model, 1, STYLE_STEPS, 4.0, "euler", "karras", made["positive"],
                                made["negative"], made["latent"])
        return run

    cpu = torch.device("cpu")
    blocks, block_plain = compare(sample(made["blocks"]), sample(made["plain"]), cpu, repeats=3)
    align, align_plain = compare(sample(made["align"]), sample(made["plain"]), cpu, repeats=3)
    return {"style_block_overhead": blocks / block_plain, "style_align_overhead": align / align_plain,
            "style_block_seconds": blocks, "style_block_plain_seconds": block_plain,
            "style_align_seconds": align, "style_align_plain_seconds": align_plain}


OPT_BATCH, OPT_STEPS = 16, 10


def optimisation_perf_figures(device) -> dict:
    """One LatentOptimize step (decode, CLIP text score, backward, Adam step) through the engine's ``optimise``
    against the same step written by hand in plain PyTorch, on the reference family's VAE and CLIP; and the cost of
    the default CLIP views (8) and smoothing on top."""
    family = models.load()
    family.vae.to(device)
    family.clip.to(device)
    scenes = world.scenes(OPT_BATCH, seed=1)
    with torch.no_grad():
        start = family.encode(world.render_batch(scenes).to(device))
        text = family.encode_text(["green"]).embedding.to(device)
    unit_text = torch.nn.functional.normalize(text[0].float(), dim=0)

    def objective(view_count):
        return objectives.combine([(objectives.clip_text(family.score_images, text, None, "clip", view_count), 1.0),
                                   (objectives.reference_distance("reference", "image"), 1.0)])

    plain_objective, default_objective = objective(1), objective(8)

    def ours(**settings):
        return lambda: optimise(start, settings.pop("objective", plain_objective), family.decode, OPT_STEPS, 0.1,
                                **settings)

    def by_hand():
        with torch.no_grad():
            reference = family.decode(start)
        rms = start.pow(2).flatten(1).mean(dim=1).sqrt().reshape(-1, 1, 1, 1)
        delta = torch.zeros_like(start, requires_grad=True)
        adam = torch.optim.Adam([delta], lr=0.1)
        for _ in range(OPT_STEPS):
            picture = family.decode(start + delta * rms)
            similarity = torch.nn.functional.normalize(family.score_images(picture).float(), dim=-1) @ unit_text
            loss = (1 - similarity + (picture - reference).abs().flatten(1).mean(dim=1)).sum()
            delta.grad, = torch.autograd.grad(loss, delta)  # the models' weights are not being trained
            adam.step()

    ours_seconds, hand_seconds = compare(ours(), by_hand, device, repeats=5)
    defaults_seconds, _ = compare(ours(objective=default_objective, smoothing=4.0), by_hand, device, repeats=3)
    return {"opt_iter_overhead": ours_seconds / hand_seconds, "opt_iter_seconds": ours_seconds / OPT_STEPS,
            "opt_iter_by_hand_seconds": hand_seconds / OPT_STEPS,
            "opt_defaults_iter_ratio": defaults_seconds / ours_seconds}


CHECKPOINT_SIZE, CHECKPOINT_BATCH, CHECKPOINT_SAMPLER_STEPS, CHECKPOINT_ITERATIONS = 128, 4, 4, 3


def checkpoint_run(checkpointing: bool) -> tuple[float, float]:
    """MiB that Noise Optimize iterations (a 4-step Euler sampler through the reference UNet, the VAE's decoder,
    CLIP, backward) add to the process's peak memory beyond a forward pass, in a fresh process (peak RSS on the CPU,
    the CUDA allocator's peak on a GPU), and seconds per iteration."""
    import subprocess

    code = f"""
import resource, sys, time, torch
sys.path.insert(0, {str(Path(__file__).parent)!r})
from _bootstrap import load_pack
load_pack()
from latent_space_control.core import objectives
from latent_space_control.core.optimize import checkpointed, few_step_sampler, optimise
from latent_space_control.core.sampling import karras_sigmas
from latent_space_control.reference import models
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
family = models.load()
for module in (family.unet, family.vae, family.clip):
    module.to(device)
side = {CHECKPOINT_SIZE} // models.DOWNSCALE
with torch.no_grad():
    context = family.encode_text(["a large circle in the middle, white background"]).hidden_states.to(device)
    text = family.encode_text(["green"]).embedding.to(device)
sigmas = karras_sigmas({CHECKPOINT_SAMPLER_STEPS}, *family.sigma_range()).to(device)
denoise, decode = family.denoiser(context, 4.0), family.decode
if {checkpointing}:
    denoise, decode = checkpointed(denoise), checkpointed(decode)
generate = few_step_sampler(denoise, sigmas, lambda n: n * sigmas[0], lambda x: x / family.scaling_factor)
noise = torch.randn({CHECKPOINT_BATCH}, 4, side, side, generator=torch.Generator().manual_seed(0)).to(device)
objective = objectives.clip_text(family.score_images, text, None, "clip")
def peak():
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
with torch.no_grad():
    decode(generate(noise))
before = peak()
start = time.perf_counter()
optimise(noise, objective, decode, {CHECKPOINT_ITERATIONS}, 0.1, regulariser_name="gaussian_shell",
         regulariser_weight=1.0, generate=generate)
print(peak() - before, (time.perf_counter() - start) / {CHECKPOINT_ITERATIONS})
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    memory, seconds = out.stdout.strip().splitlines()[-1].split()
    return float(memory), float(seconds)


def checkpoint_figures() -> dict:
    (with_memory, with_seconds), (without_memory, without_seconds) = checkpoint_run(True), checkpoint_run(False)
    return {"opt_checkpoint_mem_ratio": with_memory / without_memory, "opt_checkpoint_peak_mib": with_memory,
            "opt_no_checkpoint_peak_mib": without_memory, "opt_checkpoint_time_ratio": with_seconds / without_seconds,
            "opt_checkpoint_size": f"{CHECKPOINT_SIZE}x{CHECKPOINT_SIZE} pictures, batch {CHECKPOINT_BATCH}, "
                                   f"{CHECKPOINT_SAMPLER_STEPS} sampler steps"}


STEER_NEW_TOKENS, STEER_REPEATS = 48, 5


def steer_generation_figures(device) -> dict:
    """Tokens per second of greedy generation with a steering vector at the default block against none, same
    settings and length (every token generated: no early stop), on a GPT-2-small-sized model (12 blocks, 768 wide;
    random weights, built from a config) and on the reference LM. Ratio > 1 would mean steering is faster."""
    import transformers

    small = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=12, n_embd=768, n_head=12)).eval().to(device)
    figures = {}
    for label, model in (("", small), ("_reference", models.load().lm.to(device))):
        _, blocks = steering.transformer_blocks(model)
        vector = torch.randn(model.config.n_embd, generator=torch.Generator().manual_seed(0)).to(device)
        vectors = {steering.default_block(len(blocks)): vector}
        ids = torch.tensor([[1, 5, 7, 9]], device=device)
        new_tokens = min(STEER_NEW_TOKENS, model.config.n_positions - ids.shape[1])  # the reference LM holds 32

        def write():
            with torch.inference_mode():
                model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, use_cache=True,
                               max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)

        def steered():
            with steering.steering(blocks, vectors, 2.0):
                write()

        steered_seconds, plain_seconds = compare(steered, write, device, repeats=STEER_REPEATS)
        figures[f"steer_lm_tokens_ratio{label}"] = plain_seconds / steered_seconds  # tokens/s steered ÷ unsteered
        figures[f"steer_lm_tokens_per_second{label}"] = new_tokens / steered_seconds
        figures[f"steer_lm_tokens_per_second_unsteered{label}"] = new_tokens / plain_seconds
    return figures


STEER_ENCODE_REPEATS = 15


def steer_encode_figures(harness) -> dict:
    """CLIPTextEncode through a Text Steer clone (its defaults: a red-vs-blue vector at the default block, strength
    2, the prompt's tokens) against
    the plain CLIP, on ComfyUI's own SD1 text encoder at CLIP-L size (12 blocks, 768 wide; random weights) and on
    the reference CLIP. Each CLIP encodes a run of six prompts in turn, so the steered block is swapped in and out
    once per six prompts, as when a workflow encodes a positive through the steered CLIP and a negative through the
    plain one."""
    from tiny_clips import _clip  # on the path once the harness started ComfyUI
    import comfy.sd1_clip
    from latent_space_control.nodes.reference import load_reference_family
    from latent_space_control.reference.models import WEIGHTS

    with torch.inference_mode():
        clip_l = _clip(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel, {}, seed=5)
        reference = load_reference_family(WEIGHTS)[1]
    vector_node = harness.node_class("LSC_SteerVectorFromPrompts")
    steer_node = harness.node_class("LSC_TextSteer")
    encode_node = harness.node_class("CLIPTextEncode")()
    prompts = [f"a {size} {colour} circle" for size in ("small", "large") for colour in ("green", "cyan", "yellow")]
    figures = {}
    for label, clip in (("", clip_l), ("_reference", reference)):
        with torch.inference_mode():
            direction = vector_node.execute(clip, "red", "blue", "none", "", "auto", "auto",
                                            "mean_difference").result[0]
            steered_clip = steer_node.execute(clip, direction, 2.0, "", "prompt_tokens").result[0]

        def encode(which):
            def run():
                with torch.inference_mode():
                    for prompt in prompts:
                        encode_node.encode(which, prompt)
            return run

        steered, plain = compare(encode(steered_clip), encode(clip), torch.device("cpu"), STEER_ENCODE_REPEATS)
        figures[f"steer_encode_overhead{label}"] = steered / plain
        figures[f"steer_encode_seconds{label}"] = steered / len(prompts)
        figures[f"steer_encode_plain_seconds{label}"] = plain / len(prompts)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object of named figures")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    figures = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
               "torch_threads": torch.get_num_threads()}
    figures.update(interpolation_figures(device))
    figures.update(direction_perf_figures(device))
    figures.update(optimisation_perf_figures(device))
    figures.update(checkpoint_figures())
    figures.update(steer_generation_figures(device))
    figures.update(analysis_correlation_perf_figures())
    if os.environ.get("COMFYUI_PATH"):
        from comfy_fidelity import start_comfyui

        # One harness for every ComfyUI figure: the pack registers its nodes under the first harness's folder.
        with tempfile.TemporaryDirectory() as work:
            comfy = start_comfyui(Path(work))
            for measure in (style_perf_figures, steer_encode_figures, guidance_perf_figures, sega_perf_figures,
                            analysis_retrieval_perf_figures):
                figures.update(measure(comfy))
    else:
        print("perf.py: COMFYUI_PATH is not set; the figures measured through ComfyUI (style_*_overhead, "
              "steer_encode_overhead, guide_*_overhead, sega_batched_vs_sequential_speedup, "
              "comfy_analysis_reconstruction_batched_speedup) are left out",
              file=sys.stderr)
        figures.update(analysis_retrieval_perf_figures())
    report(figures, args.json)


if __name__ == "__main__":
    main()
