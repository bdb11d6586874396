"""Which ComfyUI is running, and a clear message when it is too old for the pack."""

from __future__ import annotations

import importlib.metadata
import logging
import re

from .. import MIN_COMFYUI_VERSION

log = logging.getLogger("latent_space_control")


def _parse(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def comfyui_version() -> str | None:
    """Upstream ComfyUI keeps its version in the top-level module comfyui_version; pip-installed ComfyUI in its
    distribution metadata."""
    try:
        import comfyui_version

        return comfyui_version.__version__
    except ImportError:
        pass
    try:
        return importlib.metadata.version("comfyui")
    except importlib.metadata.PackageNotFoundError:
        return None


def check_comfyui() -> None:
    """Raise a clear ImportError if ComfyUI lacks the V3 node API; warn if it is older than the tested minimum."""
    found = comfyui_version()
    try:
        import comfy_api.latest  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"Latent Space Control needs ComfyUI {MIN_COMFYUI_VERSION} or newer (for the V3 node API, comfy_api.latest); "
            f"this ComfyUI is {found or 'of unknown version'}. Update ComfyUI, then restart it.") from error
    if found is not None and _parse(found) < _parse(MIN_COMFYUI_VERSION):
        log.warning("Latent Space Control is tested with ComfyUI %s or newer; this ComfyUI is %s. "
                    "If a node fails, update ComfyUI first.", MIN_COMFYUI_VERSION, found)
