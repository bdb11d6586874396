import pytest

from comfy_harness import ComfyUI, comfyui_root

SKIP_REASON = ("COMFYUI_PATH is not set: real-ComfyUI integration tests skipped "
               "(export a ComfyUI, install its requirements, set COMFYUI_PATH; see README)")


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    root = comfyui_root()
    if root is None:
        pytest.skip(SKIP_REASON)
    return ComfyUI(root, tmp_path_factory.mktemp("comfyui"))
