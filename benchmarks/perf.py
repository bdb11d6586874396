"""Speed of the engine against the plain PyTorch baseline, measured side by side in one run.

python benchmarks/perf.py [--json]
"""

import argparse
import statistics
import time

import torch

from _bootstrap import load_pack, report

load_pack()
from latent_space_control.core.interpolation import interpolate  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object of named figures")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    figures = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
               "torch_threads": torch.get_num_threads()}
    figures.update(interpolation_figures(device))
    report(figures, args.json)


if __name__ == "__main__":
    main()
