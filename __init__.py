"""Latent Space Control: precise control over the latent spaces of generative models, as ComfyUI nodes.

Outside ComfyUI, ``import latent_space_control.core`` gives the engine. Inside ComfyUI, the loader calls
``comfy_entrypoint``; the nodes (and ComfyUI's API) are imported only then, so importing the package stays cheap.
"""

__version__ = "0.1.0"
# Oldest ComfyUI the nodes are tested against; keep equal to requires-comfyui in pyproject.toml.
MIN_COMFYUI_VERSION = "0.3.64"


async def comfy_entrypoint():
    from .nodes.compat import check_comfyui

    check_comfyui()
    from .nodes.extension import LatentSpaceControlExtension

    return LatentSpaceControlExtension()
