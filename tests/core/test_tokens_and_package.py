import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

import latent_space_control
from latent_space_control.core import require_package
from latent_space_control.core.tokens import common_length, tile_tokens

ROOT = Path(latent_space_control.__file__).resolve().parent


def attention(query, keys, values):
    weights = torch.softmax(query @ keys.transpose(-1, -2) / keys.shape[-1] ** 0.5, dim=-1)
    return weights @ values


def test_tiling_tokens_leaves_cross_attention_unchanged():
    generator = torch.Generator().manual_seed(0)
    query, context = torch.randn(1, 64, 32, generator=generator), torch.randn(1, 77, 32, generator=generator)
    w_k, w_v = torch.randn(32, 32, generator=generator), torch.randn(32, 32, generator=generator)
    tiled = tile_tokens(context, 231)
    assert tiled.shape == (1, 231, 32)
    torch.testing.assert_close(attention(query, tiled @ w_k, tiled @ w_v), attention(query, context @ w_k, context @ w_v))


def test_common_length_is_a_small_common_multiple():
    assert common_length(77, 154) == 154
    assert common_length(154, 231) == 462
    assert common_length(211, 223) == 223  # the exact multiple would be huge: fall back to the longest


def test_missing_optional_package_names_what_to_install_and_into_which_python():
    with pytest.raises(ImportError) as error:
        require_package("no_such_package_lsc", "no-such-package", "direction files")
    assert "'no-such-package' is needed for direction files" in str(error.value)
    assert f"{sys.executable} -m pip install no-such-package" in str(error.value)


def test_importing_the_pack_loads_no_heavy_library():
    code = ("import sys, latent_space_control, latent_space_control.core; "
            "heavy = [m for m in ('comfy', 'comfy_api', 'open_clip', 'transformers', 'diffusers') if m in sys.modules]; "
            "print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    assert result.stdout.strip() == "[]"


def test_metadata_agrees_with_the_package_and_never_pulls_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["version"] == latent_space_control.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", latent_space_control.__version__)
    assert project["tool"]["comfy"]["requires-comfyui"] == f">={latent_space_control.MIN_COMFYUI_VERSION}"
    for requirement in [*project["project"]["dependencies"], *(ROOT / "requirements.txt").read_text().splitlines()]:
        assert not re.match(r"\s*(torch|torchvision|torchaudio)\b", requirement)
