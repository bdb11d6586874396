import sys

import pytest
import torch

from comfy_harness import ComfyUI, comfyui_root

SKIP_REASON = ("COMFYUI_PATH is not set: real-ComfyUI integration tests skipped "
               "(export a ComfyUI, install its requirements, set COMFYUI_PATH; see README)")


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    root = comfyui_root()
    if root is None:
        pytest.skip(SKIP_REASON)
    return ComfyUI(root, tmp_path_factory.mktemp("comfyui"))


@pytest.fixture(scope="session")
def reference_loader(comfy):
    """The pack's reference-model module as ComfyUI loaded it (what the Reference Model Loader node runs)."""
    return sys.modules[comfy.node_class("LSC_ReferenceModelLoader").__module__]


@pytest.fixture(scope="session")
def reference_family(reference_loader):
    """(MODEL, CLIP, VAE): the shipped reference family as native ComfyUI objects, loaded under inference mode as
    the node loads it — a model that knows what "red" and "circle" mean, beside the tiny random test models."""
    from latent_space_control.reference.models import WEIGHTS

    with torch.inference_mode():
        return reference_loader.load_reference_family(WEIGHTS)
