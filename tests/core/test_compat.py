"""What the pack says when the ComfyUI that loads it is missing the V3 API or older than the tested minimum."""

import logging
import sys
import types

import pytest

import latent_space_control
from latent_space_control.nodes import compat


def fake_comfyui(monkeypatch, version, with_v3_api):
    monkeypatch.setitem(sys.modules, "comfyui_version", types.SimpleNamespace(__version__=version))
    if with_v3_api:
        monkeypatch.setitem(sys.modules, "comfy_api", types.ModuleType("comfy_api"))
        monkeypatch.setitem(sys.modules, "comfy_api.latest", types.ModuleType("comfy_api.latest"))
    else:
        monkeypatch.setitem(sys.modules, "comfy_api.latest", None)  # makes the import fail


def test_a_comfyui_without_the_v3_api_gets_a_clear_message(monkeypatch):
    fake_comfyui(monkeypatch, "0.3.20", with_v3_api=False)
    with pytest.raises(ImportError, match=r"needs ComfyUI 0\.3\.64 or newer .*this ComfyUI is 0\.3\.20\. Update ComfyUI"):
        compat.check_comfyui()


def test_an_older_comfyui_with_the_v3_api_gets_a_warning(monkeypatch, caplog):
    fake_comfyui(monkeypatch, "0.3.50", with_v3_api=True)
    with caplog.at_level(logging.WARNING, logger="latent_space_control"):
        compat.check_comfyui()
    assert "tested with ComfyUI 0.3.64 or newer; this ComfyUI is 0.3.50" in caplog.text


def test_a_supported_comfyui_loads_silently(monkeypatch, caplog):
    fake_comfyui(monkeypatch, latent_space_control.MIN_COMFYUI_VERSION, with_v3_api=True)
    with caplog.at_level(logging.WARNING, logger="latent_space_control"):
        compat.check_comfyui()
    assert caplog.text == ""
    assert compat.comfyui_version() == latent_space_control.MIN_COMFYUI_VERSION
