"""The adapters from library models to the engine's callables, checked against the libraries' own samplers."""

import pytest
import torch

from latent_space_control.core.adapters import (classifier_free_guidance, epsilon_denoiser, sigma_to_timestep,
                                                sigmas_from_alphas_cumprod, unet_epsilon)
from latent_space_control.core.sampling import karras_sigmas, sample_euler

diffusers = pytest.importorskip("diffusers", reason="diffusers is a test extra: pip install -e '.[test]'")


def tiny_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=4, norm_num_groups=8, cross_attention_dim=8).eval()


def test_timesteps_of_the_training_sigmas_are_the_steps_themselves():
    scheduler = diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    sigmas = sigmas_from_alphas_cumprod(scheduler.alphas_cumprod)
    steps = torch.tensor([0, 1, 10, 500, 999])
    torch.testing.assert_close(sigma_to_timestep(sigmas[steps], sigmas), steps.float())
    between = (sigmas[10] * sigmas[11]).sqrt()  # halfway in log sigma
    torch.testing.assert_close(sigma_to_timestep(between[None], sigmas), torch.tensor([10.5]))


def test_euler_over_the_epsilon_denoiser_matches_diffusers_euler_scheduler():
    unet, context = tiny_unet(), torch.randn(1, 5, 8, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    scheduler = diffusers.EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                                 use_karras_sigmas=True)
    scheduler.set_timesteps(6)
    with torch.no_grad():
        x = noise * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            epsilon = unet(scheduler.scale_model_input(x, t), t, encoder_hidden_states=context.expand(2, -1, -1)).sample
            x = scheduler.step(epsilon, t, x).prev_sample
        sigmas = sigmas_from_alphas_cumprod(scheduler.alphas_cumprod)
        schedule = karras_sigmas(6, sigmas[0].item(), sigmas[-1].item())
        ours = sample_euler(epsilon_denoiser(unet_epsilon(unet, context), scheduler.alphas_cumprod),
                            noise * schedule[0], schedule)
    torch.testing.assert_close(ours, x, atol=2e-4, rtol=1e-4)


def test_classifier_free_guidance_extrapolates_from_unconditional():
    conditional, unconditional = (lambda x, s: x + 1), (lambda x, s: x)
    x = torch.zeros(1, 4)
    torch.testing.assert_close(classifier_free_guidance(conditional, unconditional, 3.0)(x, None), x + 3)
