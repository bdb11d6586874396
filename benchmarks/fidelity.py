"""How faithfully each control does what it says, measured against exact answers.

python benchmarks/fidelity.py [--json]
"""

import argparse

import torch

from _bootstrap import load_pack, report

load_pack()
from latent_space_control.core.interpolation import interpolate, interpolate_path, path_positions, seeded_noise  # noqa: E402
from latent_space_control.core.sampling import karras_sigmas, sample_euler  # noqa: E402
from latent_space_control.reference import oracle, world  # noqa: E402
from latent_space_control.reference.gmm import mode_frequency_error, standard_mixture  # noqa: E402

EVALUATION_SEED = 20261123  # a fresh evaluation set, seeded apart from every test's


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
    samples = sample_euler(mixture.denoise, noise, karras_sigmas(32, 0.002, 80.0))
    return {
        "ref_oracle_accuracy": min(per_attribute.values()),
        **{f"ref_oracle_accuracy_{name}": value for name, value in per_attribute.items()},
        "gmm_mode_frequency_error": mode_frequency_error(mixture, samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object of named figures")
    args = parser.parse_args()
    report({**interpolation_figures(), **reference_world_figures()}, args.json)


if __name__ == "__main__":
    main()
