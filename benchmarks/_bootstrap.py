"""Lets the benchmarks run from a checkout without installing the pack: the repository root is the package."""

import importlib.util
import sys
from pathlib import Path

EVALUATION_SEED = 20261123  # fidelity.py's fresh evaluation set, seeded apart from every test's


def load_pack():
    try:
        import latent_space_control
    except ImportError:
        root = Path(__file__).resolve().parents[1]
        spec = importlib.util.spec_from_file_location("latent_space_control", root / "__init__.py",
                                                      submodule_search_locations=[str(root)])
        latent_space_control = importlib.util.module_from_spec(spec)
        sys.modules["latent_space_control"] = latent_space_control
        spec.loader.exec_module(latent_space_control)
    return latent_space_control


def report(figures: dict, as_json: bool) -> None:
    import json

    if as_json:
        print(json.dumps(figures))
    else:
        width = max(len(name) for name in figures)
        for name, value in figures.items():
            print(f"{name:<{width}}  {value:.4g}" if isinstance(value, float) else f"{name:<{width}}  {value}")
