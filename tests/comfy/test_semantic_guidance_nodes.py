"""Semantic Guidance through ComfyUI's own samplers: no effect at scale 0 and no trace on the input model, the
concept's effect through KSampler and SamplerCustomAdvanced at cfg 1 and above, per-item batches, two chained concepts
in one batched model call per step that equal the formula evaluated prompt by prompt, every common sampler on a tiny
EPS model and a tiny flow model, and bad input."""

import sys

import pytest
import torch

import tiny_dits

BLUE_SQUARE = "a large blue square in the middle, white background"
STEPS = 8


def node(comfy):
    return comfy.node_class("LSC_SemanticGuidance")


def pack_module(comfy):
    return sys.modules[node(comfy).__module__]


def guide(comfy, model, concept, direction="add", scale=5.0, threshold=0.0, start=0.0, end=1.0, momentum_scale=0.0,
          momentum_beta=0.6):
    return node(comfy).execute(model, concept, direction, scale, threshold, start, end, momentum_scale,
                               momentum_beta).result[0]


def encode(clip, text):
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def sample(model, positive, negative, noise, cfg=4.0, sampler="euler", steps=STEPS):
    import comfy.sample

    latent = torch.zeros_like(noise)
    return comfy.sample.sample(model, noise, steps, cfg, sampler, "karras", positive, negative, latent, seed=1,
                               disable_pbar=True)


def seeded(shape, seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def prompts(comfy, reference_family):
    model, clip, _ = reference_family
    with torch.inference_mode():
        return {text: encode(clip, text) for text in (BLUE_SQUARE, "", "red", "white background")}


def redness(reference_family, latents):
    with torch.inference_mode():
        pictures = reference_family[2].decode(latents)
    return float((pictures[..., 0] - pictures[..., 2]).mean())


@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_scale_zero_is_the_unpatched_model_and_the_input_model_is_left_alone(comfy, reference_family, prompts, cfg):
    model = reference_family[0]
    noise = seeded((2, 4, 8, 8))
    with torch.inference_mode():
        plain = sample(model, prompts[BLUE_SQUARE], prompts[""], noise, cfg)
        assert torch.equal(sample(guide(comfy, model, prompts["red"], scale=0.0), prompts[BLUE_SQUARE],
                                  prompts[""], noise, cfg), plain)
        guided = sample(guide(comfy, model, prompts["red"]), prompts[BLUE_SQUARE], prompts[""], noise, cfg)
        assert not torch.allclose(guided, plain, atol=1e-3) and torch.isfinite(guided).all()
        assert torch.equal(sample(model, prompts[BLUE_SQUARE], prompts[""], noise, cfg), plain)
    from comfy.patcher_extension import WrappersMP

    key = pack_module(comfy).KEY
    assert all(not model.get_wrappers(kind, key) for kind in
               (WrappersMP.OUTER_SAMPLE, WrappersMP.PREDICT_NOISE, WrappersMP.CALC_COND_BATCH))
    assert pack_module(comfy).apply_semantic_guidance not in model.model_options.get("sampler_post_cfg_function", [])


@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_adding_red_makes_the_blue_square_redder_than_removing_it(comfy, reference_family, prompts, cfg):
    model = reference_family[0]
    noise = seeded((4, 4, 8, 8), 2)
    with torch.inference_mode():
        plain = sample(model, prompts[BLUE_SQUARE], prompts[""], noise, cfg, steps=12)
        added = sample(guide(comfy, model, prompts["red"]), prompts[BLUE_SQUARE], prompts[""], noise, cfg, steps=12)
        removed = sample(guide(comfy, model, prompts["red"], "remove"), prompts[BLUE_SQUARE], prompts[""], noise, cfg,
                         steps=12)
    assert redness(reference_family, added) > redness(reference_family, plain) + 0.1
    assert redness(reference_family, removed) < redness(reference_family, added) - 0.1


def test_ksampler_and_sampler_custom_advanced_give_the_same_guided_picture(comfy):
    graph = {
        "loader": {"class_type": "LSC_ReferenceModelLoader", "inputs": {}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": BLUE_SQUARE}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": ""}},
        "red": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": "red"}},
        "sega": {"class_type": "LSC_SemanticGuidance", "inputs": {
            "model": ["loader", 0], "concept": ["red", 0], "direction": "add", "scale": 5.0, "threshold": 0.0,
            "start_percent": 0.0, "end_percent": 1.0, "momentum_scale": 0.0, "momentum_beta": 0.6}},
        "empty": {"class_type": "LSC_EmptyLatentForVAE",
                  "inputs": {"vae": ["loader", 2], "width": 32, "height": 32, "batch_size": 2}},
        "ksampler": {"class_type": "KSampler", "inputs": {
            "model": ["sega", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
            "seed": 3, "steps": STEPS, "cfg": 4.0, "sampler_name": "euler", "scheduler": "karras", "denoise": 1.0}},
        "plain": {"class_type": "KSampler", "inputs": {
            "model": ["loader", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
            "seed": 3, "steps": STEPS, "cfg": 4.0, "sampler_name": "euler", "scheduler": "karras", "denoise": 1.0}},
        "guider": {"class_type": "CFGGuider", "inputs": {"model": ["sega", 0], "positive": ["pos", 0],
                                                        "negative": ["neg", 0], "cfg": 4.0}},
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}},
        "sampler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "sigmas": {"class_type": "BasicScheduler", "inputs": {"model": ["sega", 0], "scheduler": "karras",
                                                              "steps": STEPS, "denoise": 1.0}},
        "custom": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["sampler", 0], "sigmas": ["sigmas", 0],
            "latent_image": ["empty", 0]}},
    }
    for name in ("ksampler", "plain", "custom"):
        graph[f"capture_{name}"] = {"class_type": "LSCTest_Capture", "inputs": {"value": [name, 0], "label": name}}
    result = comfy.run(graph)
    assert result.ok, result.error
    ksampler, custom, plain = (result.captured[name]["samples"] for name in ("ksampler", "custom", "plain"))
    assert torch.allclose(ksampler, custom, atol=1e-5)
    assert not torch.allclose(ksampler, plain, atol=1e-3)


def test_items_of_a_batch_are_guided_each_on_its_own(comfy, reference_family, prompts):
    model = guide(comfy, reference_family[0], prompts["red"], threshold=0.8, momentum_scale=0.5)
    noise = seeded((2, 4, 8, 8), 4)
    with torch.inference_mode():
        together = sample(model, prompts[BLUE_SQUARE], prompts[""], noise)
        alone = torch.cat([sample(model, prompts[BLUE_SQUARE], prompts[""], noise[i:i + 1]) for i in range(2)])
    assert torch.allclose(together, alone, atol=1e-4)


def by_hand(model, positive, negative, concepts, noise, cfg):
    """``concepts``: (conditioning, scale, sign, threshold, momentum_scale, beta) each."""
    import comfy.samplers

    momenta = [0.0] * len(concepts)

    class Guider(comfy.samplers.CFGGuider):
        def predict_noise(self, x, timestep, model_options={}, seed=None):
            keys = ["positive", "negative", *(f"concept{i}" for i in range(len(concepts)))]
            cond, uncond, *predictions = [comfy.samplers.calc_cond_batch(
                self.inner_model, [self.conds[key]], x, timestep, model_options)[0] for key in keys]
            sigma = timestep.reshape(-1, 1, 1, 1)
            epsilon = (x - (uncond + cfg * (cond - uncond))) / sigma
            for i, ((_, scale, sign, threshold, momentum_scale, beta), prediction) in enumerate(
                    zip(concepts, predictions)):
                psi = ((x - prediction) - (x - uncond)) / sigma
                flat = psi.abs().flatten(2)
                cutoff = torch.quantile(flat, threshold, dim=-1, keepdim=True, interpolation="lower")
                gamma = sign * scale * (flat >= cutoff).reshape(psi.shape) * psi
                epsilon = epsilon + gamma + momentum_scale * momenta[i]
                momenta[i] = beta * momenta[i] + (1 - beta) * gamma
            return x - sigma * epsilon

    guider = Guider(model)
    guider.inner_set_conds({"positive": positive, "negative": negative,
                            **{f"concept{i}": concept[0] for i, concept in enumerate(concepts)}})
    guider.set_cfg(cfg)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "karras", STEPS)
    return guider.sample(noise, torch.zeros_like(noise), comfy.samplers.sampler_object("euler"), sigmas, seed=1,
                         disable_pbar=True)


def test_two_chained_concepts_ride_in_one_model_call_a_step_and_equal_the_formula(comfy, reference_family, prompts):
    from comfy.patcher_extension import WrappersMP

    model = reference_family[0]
    chained = guide(comfy, guide(comfy, model, prompts["red"], threshold=0.5, momentum_scale=0.5, momentum_beta=0.7),
                    prompts["white background"], "remove", scale=2.0, threshold=0.8, momentum_scale=0.3,
                    momentum_beta=0.5)
    batches = []

    def count(executor, x, t, *args, **kwargs):
        batches.append(x.shape[0])
        return executor(x, t, *args, **kwargs)

    counted = chained.clone()
    counted.add_wrapper_with_key(WrappersMP.APPLY_MODEL, "count", count)
    noise = seeded((2, 4, 8, 8), 5)
    with torch.inference_mode():
        guided = sample(counted, prompts[BLUE_SQUARE], prompts[""], noise)
        expected = by_hand(model, prompts[BLUE_SQUARE], prompts[""],
                           [(prompts["red"], 5.0, 1, 0.5, 0.5, 0.7),
                            (prompts["white background"], 2.0, -1, 0.8, 0.3, 0.5)], noise, 4.0)
    assert batches == [4 * 2] * STEPS  # positive, negative and both concepts, 2 items each, one call per step
    assert torch.allclose(guided, expected, atol=1e-4), (guided - expected).abs().max()
    # the first node's patch keeps its one concept; the chained clone holds both
    first = guide(comfy, model, prompts["red"])
    assert len(first.get_wrappers(WrappersMP.OUTER_SAMPLE, pack_module(comfy).KEY)[0].concepts) == 1
    assert len(chained.get_wrappers(WrappersMP.OUTER_SAMPLE, pack_module(comfy).KEY)[0].concepts) == 2


@pytest.fixture(scope="module")
def tiny_eps(comfy):
    from lsc_test_nodes import tiny_clip, tiny_model

    with torch.inference_mode():
        clip = tiny_clip()
        return tiny_model(), encode(clip, "a fox in the snow"), encode(clip, ""), encode(clip, "snow")


def tiny_flow():
    width, pooled = tiny_dits.FLUX_TEXT_WIDTH, tiny_dits.FLUX_POOLED_WIDTH

    def conditioning(seed):
        generator = torch.Generator().manual_seed(seed)
        return [[torch.randn(1, 12, width, generator=generator),
                 {"pooled_output": torch.randn(1, pooled, generator=generator)}]]

    return tiny_dits.flux_model(), conditioning(1), conditioning(2), conditioning(3)


@pytest.mark.parametrize("family, sampler", [("eps", "euler"), ("eps", "euler_ancestral"), ("eps", "dpmpp_2m"),
                                             ("eps", "dpmpp_2m_sde"), ("eps", "uni_pc"), ("flow", "euler")])
def test_every_sampler_stays_finite_and_alive(comfy, tiny_eps, family, sampler):
    with torch.inference_mode():
        model, positive, negative, concept = tiny_eps if family == "eps" else tiny_flow()
        channels = model.get_model_object("latent_format").latent_channels
        noise = seeded((2, channels, 8, 8), 6)
        plain = sample(model, positive, negative, noise, sampler=sampler)
        guided = sample(guide(comfy, model, concept, momentum_scale=0.5), positive, negative, noise, sampler=sampler)
    assert torch.isfinite(guided).all()
    assert guided.std() > 0.2 * plain.std()  # no collapse
    assert not torch.allclose(guided, plain, atol=1e-4)


def test_a_window_that_ends_before_it_starts_is_refused_at_queue_time(comfy):
    graph = {
        "loader": {"class_type": "LSC_ReferenceModelLoader", "inputs": {}},
        "red": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": "red"}},
        "sega": {"class_type": "LSC_SemanticGuidance", "inputs": {
            "model": ["loader", 0], "concept": ["red", 0], "direction": "add", "scale": 5.0, "threshold": 0.0,
            "start_percent": 0.8, "end_percent": 0.2, "momentum_scale": 0.0, "momentum_beta": 0.6}},
        "capture": {"class_type": "LSCTest_Capture", "inputs": {"value": ["sega", 0], "label": "model"}},
    }
    result = comfy.run(graph)
    assert not result.ok
    assert "end_percent (0.2) is before start_percent (0.8)" in result.error


def test_bad_concepts_are_refused_by_name(comfy, reference_family, prompts):
    model = reference_family[0]
    with pytest.raises(ValueError, match=r"concept is an empty conditioning; expected at least one entry"):
        guide(comfy, model, [])
    narrow = [[torch.zeros(1, 77, 16), {}]]
    with torch.inference_mode(), pytest.raises(ValueError, match=r"concept \(Semantic Guidance concept 1\) holds "
                                                                r"16-wide tokens but the positive prompt \d+-wide"):
        sample(guide(comfy, model, narrow), prompts[BLUE_SQUARE], prompts[""], seeded((1, 4, 8, 8)))


def test_a_guider_without_a_negative_is_refused(comfy, reference_family, prompts):
    from comfy.samplers import CFGGuider, calculate_sigmas, sampler_object

    guider = CFGGuider(guide(comfy, reference_family[0], prompts["red"]))
    guider.inner_set_conds({"positive": prompts[BLUE_SQUARE]})
    sigmas = calculate_sigmas(reference_family[0].get_model_object("model_sampling"), "karras", 4)
    noise = seeded((1, 4, 8, 8))
    with torch.inference_mode(), pytest.raises(ValueError, match=r"needs the negative prompt's prediction"):
        guider.sample(noise, torch.zeros_like(noise), sampler_object("euler"), sigmas, seed=1,
                      disable_pbar=True)
