"""What the pack says when the ComfyUI that loads it is missing the V3 API or older than the tested minimum."""

import importlib.metadata
import logging
import sys
import types

import pytest

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


@pytest.mark.parametrize("version, warned", [("0.3.64", False), ("0.3.100", False), ("0.10.0", False), ("1.0", False),
                                            ("0.3.9", True), ("0.2.99", True)])
def test_versions_compare_as_numbers_not_as_text(monkeypatch, caplog, version, warned):
    fake_comfyui(monkeypatch, version, with_v3_api=True)
    with caplog.at_level(logging.WARNING, logger="latent_space_control"):
        compat.check_comfyui()
    assert ("tested with ComfyUI" in caplog.text) == warned


def test_a_pip_installed_comfyui_is_read_from_its_distribution(monkeypatch):
    monkeypatch.setitem(sys.modules, "comfyui_version", None)  # no top-level module, as in the pip-installable fork
    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "0.12.1" if name == "comfyui" else real_version(name))
    assert compat.comfyui_version() == "0.12.1"


def test_a_comfyui_of_unknown_version_without_the_v3_api_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "comfyui_version", None)
    monkeypatch.setitem(sys.modules, "comfy_api.latest", None)

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    with pytest.raises(ImportError, match="this ComfyUI is of unknown version"):
        compat.check_comfyui()
