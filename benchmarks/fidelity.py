"""How faithfully each control does what it says, measured against exact answers.

python benchmarks/fidelity.py [--json]
"""

import argparse

import torch

from _bootstrap import EVALUATION_SEED, load_pack, report
from _direction_fidelity import text_direction_figures
from _analysis_correlation_bench import fidelity_figures as analysis_correlation_figures
from _analysis_retrieval_bench import fidelity_figures as analysis_retrieval_figures
from _analysis_scan_bench import fidelity_figures as analysis_scan_figures
from _guidance_bench import guidance_figures
from _latent_direction_fidelity import latent_direction_figures
from _noise_bench import noise_figures
from _optimize_fidelity import optimize_figures
from _sega_bench import sega_figures
from _steer_fidelity import steer_figures
from _style_fidelity import style_figures

load_pack()
from latent_space_control.core.interpolation import interpolate, interpolate_path, path_positions  # noqa: E402
from latent_space_control.core.noise import seeded_noise  # noqa: E402
from latent_space_control.core.sampling import karras_sigmas, sample_euler  # noqa: E402
from latent_space_control.reference import oracle, world  # noqa: E402
from latent_space_control.reference import evaluate, models  # noqa: E402
from latent_space_control.reference.gmm import mode_frequency_error, standard_mixture  # noqa: E402


def interpolation_figures() -> dict:
    """Two independent unit-Gaussian noises: a good path keeps unit variance in the middle and moves evenly."""
    a, b = seeded_noise(1, (1, 16, 64, 64)), seeded_noise(2, (1, 16, 64, 64))
    frames = interpolate_path(a, b, path_positions(16, 0.0, 1.0, "linear"), "slerp")
    steps = (frames[1:] - frames[:-1]).flatten(1).norm(dim=1)
    return {
        "interp_slerp_midpoint_std": interpolate(a, b, 0.5, "slerp").std().item(),
        "interp_lerp_midpoint_std": interpolate(a, b, 0.5, "lerp").std().item(),
        "interp_max_step_jump_ratio": (steps.max() / steps.mean()).item(),
    }


def reference_world_figures() -> dict:
    scenes = world.scenes(3000, seed=EVALUATION_SEED)
    readings = oracle.read_batch(world.render_batch(scenes))
    per_attribute = oracle.accuracy(readings, [scene.attributes() for scene in scenes])
    mixture = standard_mixture()
    noise = torch.randn((8000, *mixture.shape), generator=torch.Generator().manual_seed(EVALUATION_SEED))
    sigmas = karras_sigmas(32, 0.002, 80.0)
    samples = sample_euler(mixture.denoise, noise * sigmas[0], sigmas)
    return {
        "ref_oracle_accuracy": min(per_attribute.values()),
        **{f"ref_oracle_accuracy_{name}": value for name, value in per_attribute.items()},
        "gmm_mode_frequency_error": mode_frequency_error(mixture, samples),
    }


@torch.inference_mode()
def reference_family_figures() -> dict:
    """The shipped models, each judged by the oracle or the grammar on a fresh evaluation set."""
    family = models.load()
    vae = evaluate.vae_attribute_preservation(family, 2000, seed=EVALUATION_SEED + 1)
    t2i = evaluate.text_to_image_accuracy(family, 1024, seed=EVALUATION_SEED + 2)
    held_out = evaluate.text_to_image_accuracy(family, 256, seed=EVALUATION_SEED + 7, held_out=True)
    clip = evaluate.clip_zero_shot(family, 2000, seed=EVALUATION_SEED + 3)
    partial_t2i = evaluate.partial_prompt_accuracy(family, 1024, seed=EVALUATION_SEED + 5)
    partial_clip = evaluate.clip_zero_shot_partial(family, 2000, seed=EVALUATION_SEED + 6)
    return {
        "ref_vae_attribute_preservation": min(vae["colour"], vae["shape"]),
        **{f"ref_vae_preservation_{name}": value for name, value in vae.items()},
        "ref_t2i_color_accuracy": t2i["colour"],
        "ref_t2i_shape_accuracy": t2i["shape"],
        **{f"ref_t2i_{name}_accuracy": t2i[name] for name in ("size", "position", "background")},
        # Shape-and-colour pairs the family never saw in training: what composition reaches.
        "ref_t2i_heldout_accuracy": min(held_out["colour"], held_out["shape"]),
        **{f"ref_t2i_heldout_{name}_accuracy": value for name, value in held_out.items()},
        "ref_clip_zeroshot_color": clip["colour"],
        "ref_clip_zeroshot_shape": clip["shape"],
        **{f"ref_clip_zeroshot_{name}": clip[name] for name in ("size", "position", "background")},
        # Prompts as artists write them, naming only some attributes: the named ones must show.
        "ref_t2i_partial_prompt_accuracy": min(partial_t2i["colour"], partial_t2i["shape"]),
        **{f"ref_t2i_partial_{name}_accuracy": value for name, value in partial_t2i.items()},
        "ref_clip_zeroshot_partial": partial_clip["colour"],
        **{f"ref_clip_zeroshot_partial_{name}": value for name, value in partial_clip.items()},
        "ref_lm_grammatical": evaluate.lm_grammatical(family, 1000, seed=EVALUATION_SEED + 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object of named figures")
    args = parser.parse_args()
    report({**interpolation_figures(), **reference_world_figures(), **reference_family_figures(),
            **text_direction_figures(), **latent_direction_figures(), **style_figures(), **optimize_figures(),
            **steer_figures(), **guidance_figures(), **sega_figures(), **noise_figures(),
            **analysis_scan_figures(), **analysis_correlation_figures(), **analysis_retrieval_figures()},
           args.json)


if __name__ == "__main__":
    main()
