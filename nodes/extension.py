"""The ComfyExtension that lists every node of the pack."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .. import __version__
from . import (correlation, directions, guidance, interpolate, latent_analysis, llm, nearest, noise, open_clip, optimize,
               reconstruction, reference, semantic_guidance, steer, style)
from .compat import log


class LatentSpaceControlExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        node_list = [*interpolate.NODES, *reference.NODES, *directions.NODES, *open_clip.NODES,
                     *style.NODES, *optimize.NODES, *steer.NODES, *llm.NODES,
                     *guidance.NODES, *semantic_guidance.NODES, *noise.NODES,
                     *latent_analysis.NODES, *correlation.NODES, *nearest.NODES, *reconstruction.NODES]
        log.info("Latent Space Control %s: %d nodes", __version__, len(node_list))
        return node_list
