"""Speed of the engine against the plain PyTorch baseline, measured side by side in one run: slerp against
`torch.lerp`; a text direction from every templated prompt in one batched encode against one encode per prompt.

python benchmarks/perf.py [--json]
"""

import argparse
import statistics
import time

import torch

from _bootstrap import load_pack, report

load_pack()
from latent_space_control.core.adapters import open_clip_text_encoder  # noqa: E402
from latent_space_control.core.directions import TEMPLATES, text_direction  # noqa: E402
from latent_space_control.core.interpolation import interpolate  # noqa: E402
from latent_space_control.reference import models  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object of named figures")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    figures = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
               "torch_threads": torch.get_num_threads()}
    figures.update(interpolation_figures(device))
    figures.update(direction_perf_figures(device))
    report(figures, args.json)


if __name__ == "__main__":
    main()
