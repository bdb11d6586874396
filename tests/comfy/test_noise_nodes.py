"""Noise Inject and Directional Noise in a real ComfyUI: amount 0 is the plain sampler bit for bit, injection is
seeded, reaches every built-in kind of sampler (EPS and flow models) through KSampler and SamplerCustomAdvanced,
keeps the progress count, leaves the input model alone, and refuses bad input by name; Directional Noise is
RandomNoise's noise at strength 0 and leans it along the direction otherwise."""

import pytest
import torch

import tiny_dits
from latent_space_control.core.directions import Direction
from test_interpolate_nodes import capture, latent

STEPS = 6


def conditioning(width: int, length: int, seed: int, pooled: int | None = None) -> list:
    generator = torch.Generator().manual_seed(seed)
    extra = {} if pooled is None else {"pooled_output": torch.randn(1, pooled, generator=generator)}
    return [[torch.randn(1, length, width, generator=generator), extra]]


@pytest.fixture(scope="module")
def eps(comfy):
    """The tiny SD1.5-style UNet (EPS) with a random prompt, built under inference mode as a loader builds it."""
    from lsc_test_nodes import TEXT_WIDTH, tiny_model

    with torch.inference_mode():
        return tiny_model(), conditioning(TEXT_WIDTH, 77, 1), conditioning(TEXT_WIDTH, 77, 2)


@pytest.fixture(scope="module")
def flow(comfy):
    """The tiny Flux model (flow matching, 16 channels)."""
    with torch.inference_mode():
        return (tiny_dits.flux_model(), conditioning(tiny_dits.FLUX_TEXT_WIDTH, 12, 1, tiny_dits.FLUX_POOLED_WIDTH),
                conditioning(tiny_dits.FLUX_TEXT_WIDTH, 12, 2, tiny_dits.FLUX_POOLED_WIDTH))


def inject(comfy, model, amount=1.0, seed=7, start=0.0, end=1.0, steps="", mask=None):
    return comfy.node_class("LSC_NoiseInject").execute(model, amount, seed, start, end, steps, mask).result[0]


def sample(model, positive, negative, sampler="euler", channels=4, seed=1, callback=None):
    import comfy.sample

    empty = torch.zeros(2, channels, 8, 8)
    with torch.inference_mode():
        return comfy.sample.sample(model, comfy.sample.prepare_noise(empty, seed), STEPS, 3.0, sampler, "karras",
                                   positive, negative, empty, seed=seed, disable_pbar=True, callback=callback)


def test_amount_0_and_no_step_in_the_window_are_the_plain_sampler_bit_for_bit(comfy, eps):
    model, positive, negative = eps
    plain = sample(model, positive, negative, "dpmpp_2m_sde")
    assert torch.equal(sample(inject(comfy, model, amount=0.0), positive, negative, "dpmpp_2m_sde"), plain)
    assert torch.equal(sample(inject(comfy, model, steps="40-50"), positive, negative, "dpmpp_2m_sde"), plain)
    assert torch.equal(sample(inject(comfy, model, start=1.0, end=1.0), positive, negative, "dpmpp_2m_sde"), plain)


def test_injection_is_reproducible_per_seed_and_leaves_the_input_model_alone(comfy, eps):
    model, positive, negative = eps
    plain = sample(model, positive, negative)
    first, again = (sample(inject(comfy, model, seed=3), positive, negative) for _ in range(2))
    other = sample(inject(comfy, model, seed=4), positive, negative)
    assert torch.equal(first, again)
    assert (first - other).abs().max() > 1e-3 and (first - plain).abs().max() > 1e-3
    assert torch.equal(sample(model, positive, negative), plain)
    assert "lsc_noise_inject" not in str(model.model_options)


@pytest.mark.parametrize("family, sampler", [("eps", "euler"), ("eps", "euler_ancestral"), ("eps", "dpmpp_2m"),
                                             ("eps", "dpmpp_2m_sde"), ("eps", "uni_pc"), ("flow", "euler")])
def test_every_kind_of_sampler_gets_finite_lively_noise(comfy, eps, flow, family, sampler):
    model, positive, negative = eps if family == "eps" else flow
    channels = 4 if family == "eps" else 16
    plain = sample(model, positive, negative, sampler, channels)
    results = [sample(inject(comfy, model, seed=seed), positive, negative, sampler, channels) for seed in (1, 2)]
    for result in results:
        assert torch.isfinite(result).all() and result.shape == plain.shape
        assert float(result.std()) > 0.3 * float(plain.std()) > 0
    assert (results[0] - results[1]).abs().max() > 1e-3
    assert (results[0] - plain).abs().max() > 1e-3


def test_steps_are_counted_over_the_whole_schedule(comfy, eps):
    """Segments report their steps with the schedule's own numbers, so previews and the progress bar run 0..steps-1."""
    model, positive, negative = eps
    seen = []
    sample(inject(comfy, model, steps="1, 3"), positive, negative, "dpmpp_2m",
           callback=lambda step, denoised, x, total: seen.append((step, total)))
    assert seen == [(i, STEPS) for i in range(STEPS)]


def test_a_zero_mask_keeps_the_deterministic_path(comfy, eps):
    model, positive, negative = eps
    plain = sample(model, positive, negative)
    masked = sample(inject(comfy, model, mask=torch.zeros(1, 32, 32)), positive, negative)
    torch.testing.assert_close(masked, plain, rtol=1e-3, atol=1e-3)
    left = torch.zeros(1, 8, 8)
    left[:, :, :4] = 1.0
    halves = sample(inject(comfy, model, mask=left), positive, negative)
    assert (halves[..., :4] - plain[..., :4]).abs().max() > 10 * (halves[..., 6:] - plain[..., 6:]).abs().max()


def test_a_sampler_that_is_not_k_diffusion_is_refused_by_name(comfy, eps):
    from comfy.sample import sample_custom
    from comfy.samplers import Sampler

    class ForeignSampler(Sampler):
        def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
                   disable_pbar=False):
            return noise

    model, positive, negative = eps
    empty = torch.zeros(1, 4, 8, 8)
    with torch.inference_mode(), pytest.raises(ValueError, match=r"a ForeignSampler sampler; expected one of"):
        sample_custom(inject(comfy, model), empty, 3.0, ForeignSampler(), torch.tensor([14.6, 1.0, 0.0]),
                                   positive, negative, empty, disable_pbar=True, seed=1)


@pytest.mark.parametrize("steps, message", [("2,x", r"steps is '2,x'; 'x' is not a step number; expected"),
                                            ("5-3", r"steps: the range '5-3' runs backwards; expected")])
def test_bad_step_numbers_are_refused_by_name(comfy, eps, steps, message):
    with pytest.raises(ValueError, match=message):
        inject(comfy, eps[0], steps=steps)


def tiny_graph(**nodes):
    graph = {"ckpt": {"class_type": "LSCTest_TinyCheckpoint", "inputs": {"ckpt_name": "tiny"}},
             "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a fox"}},
             "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": ""}},
             "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}}
    graph.update(nodes)
    return graph


def noise_inject_node(amount=1.0, start=0.0, end=1.0):
    return {"class_type": "LSC_NoiseInject", "inputs": {"model": ["ckpt", 0], "amount": amount, "seed": 5,
                                                        "start_percent": start, "end_percent": end, "steps": ""}}


def ksampler(model):
    return {"class_type": "KSampler", "inputs": {
        "model": model, "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0], "seed": 1,
        "steps": 4, "cfg": 4.0, "sampler_name": "euler_ancestral", "scheduler": "normal", "denoise": 1.0}}


def custom_sampler(model, noise):
    return {"guider_" + model[0]: {"class_type": "CFGGuider", "inputs": {"model": model, "positive": ["pos", 0],
                                                                        "negative": ["neg", 0], "cfg": 4.0}},
            "custom_" + model[0]: {"class_type": "SamplerCustomAdvanced", "inputs": {
                "noise": [noise, 0], "guider": ["guider_" + model[0], 0], "sampler": ["select", 0],
                "sigmas": ["sigmas", 0], "latent_image": ["empty", 0]}}}


def test_ksampler_and_sampler_custom_advanced_run_it_and_amount_0_changes_nothing(comfy):
    graph = tiny_graph(
        inject=noise_inject_node(), off=noise_inject_node(amount=0.0),
        random={"class_type": "RandomNoise", "inputs": {"noise_seed": 1}},
        select={"class_type": "KSamplerSelect", "inputs": {"sampler_name": "dpmpp_2m"}},
        sigmas={"class_type": "BasicScheduler", "inputs": {"model": ["ckpt", 0], "scheduler": "karras", "steps": 4,
                                                           "denoise": 1.0}},
        **{f"ks_{name}": ksampler([name, 0]) for name in ("ckpt", "inject", "off")},
        **custom_sampler(["ckpt", 0], "random"), **custom_sampler(["inject", 0], "random"),
        **custom_sampler(["off", 0], "random"))
    for name in ("ckpt", "inject", "off"):
        graph[f"capture_ks_{name}"] = capture(f"ks_{name}", f"ks_{name}")
        graph[f"capture_custom_{name}"] = capture(f"custom_{name}", f"custom_{name}")
    result = comfy.run(graph)
    assert result.ok, result.error
    for kind in ("ks", "custom"):
        plain, injected, off = (result.captured[f"{kind}_{name}"]["samples"] for name in ("ckpt", "inject", "off"))
        assert torch.equal(off, plain), kind
        assert torch.isfinite(injected).all() and (injected - plain).abs().max() > 1e-3, kind


def test_a_window_that_ends_before_it_starts_is_refused_when_queued(comfy):
    result = comfy.run(tiny_graph(inject=noise_inject_node(start=0.7, end=0.2), ks=ksampler(["inject", 0]),
                                  out=capture("ks", "out")))
    assert not result.ok
    assert "end_percent (0.2) is before start_percent (0.7)" in result.error


# ---- Directional Noise ---------------------------------------------------------------------------------------------

def directional(comfy, direction, seed=11, strength=3.0):
    return comfy.node_class("LSC_DirectionalNoise").execute(direction, seed, strength).result[0]


def test_directional_noise_is_random_noise_at_strength_0_and_leans_along_the_direction(comfy):
    from comfy.sample import prepare_noise

    vector = torch.zeros(16, 2, 4, 4)
    vector[3] = 1.0  # a 16-channel video direction at half the size: resized to the latent
    samples = torch.zeros(3, 16, 2, 8, 8)
    for latent_dict in ({"samples": samples}, {"samples": samples, "batch_index": [4, 0, 2]}):
        plain = prepare_noise(samples, 11, latent_dict.get("batch_index"))
        with torch.inference_mode():
            assert torch.equal(directional(comfy, Direction({"latent": vector}), strength=0.0)
                               .generate_noise(latent_dict), plain)
            tilted = directional(comfy, Direction({"latent": vector})).generate_noise(latent_dict)
        torch.testing.assert_close(tilted.flatten(1).norm(dim=1), plain.flatten(1).norm(dim=1))
        moved = (tilted[:, 3] - plain[:, 3]).flatten(1).sum(1) / 128 ** 0.5  # along the unit direction
        assert ((moved > 2.5) & (moved < 3.5)).all()
    assert directional(comfy, Direction({"latent": vector}), seed=11).seed == 11


def test_directional_noise_refuses_other_spaces_and_channel_counts_by_name(comfy):
    with pytest.raises(ValueError, match=r"direction is in conditioning space; expected a latent direction"):
        directional(comfy, Direction({"conditioning": torch.ones(77, 32)}))
    noise = directional(comfy, Direction({"latent": torch.ones(4, 8, 8)}))
    with pytest.raises(ValueError, match=r"direction has 4 channels but the latent has 16; expected"):
        noise.generate_noise({"samples": torch.zeros(1, 16, 8, 8)})


def test_directional_noise_drives_sampler_custom_advanced(comfy):
    graph = tiny_graph(
        a=latent(1), b=latent(2),
        direction={"class_type": "LSC_DirectionFromLatents", "inputs": {"latent_with": ["a", 0],
                                                                        "latent_without": ["b", 0]}},
        tilted={"class_type": "LSC_DirectionalNoise", "inputs": {"direction": ["direction", 0], "seed": 1,
                                                                 "strength": 4.0}},
        flat={"class_type": "LSC_DirectionalNoise", "inputs": {"direction": ["direction", 0], "seed": 1,
                                                               "strength": 0.0}},
        random={"class_type": "RandomNoise", "inputs": {"noise_seed": 1}},
        select={"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        sigmas={"class_type": "BasicScheduler", "inputs": {"model": ["ckpt", 0], "scheduler": "karras", "steps": 3,
                                                           "denoise": 1.0}},
        guider_ckpt={"class_type": "CFGGuider", "inputs": {"model": ["ckpt", 0], "positive": ["pos", 0],
                                                           "negative": ["neg", 0], "cfg": 4.0}})
    for noise in ("tilted", "flat", "random"):
        graph[f"sample_{noise}"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": [noise, 0], "guider": ["guider_ckpt", 0], "sampler": ["select", 0], "sigmas": ["sigmas", 0],
            "latent_image": ["empty", 0]}}
        graph[f"capture_{noise}"] = capture(f"sample_{noise}", noise)
    result = comfy.run(graph)
    assert result.ok, result.error
    tilted, flat, plain = (result.captured[name]["samples"] for name in ("tilted", "flat", "random"))
    assert torch.equal(flat, plain)
    assert torch.isfinite(tilted).all() and (tilted - plain).abs().max() > 1e-3
