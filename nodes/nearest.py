"""Latent Nearest (LSC): rank a batch of latents or pictures by distance to a query, in latent space or in a CLIP
image-embedding space (retrieval)."""

from __future__ import annotations

import math

import torch
from comfy_api.latest import io, ui

import comfy.model_management

from ..core.checks import require_batch
from ..core.retrieval import item_embeddings, nearest
from .common import CATEGORY, image_channels_first, new_latent, vae_pictures
from .open_clip import OPEN_CLIP
from .progress import LoopProgress

FAMILY = f"{CATEGORY}/analysis"
METRICS = ("latent_l2", "latent_cosine", "clip_cosine")
EMBED_CHUNK = 64  # pictures per CLIP pass: bounded memory, and a progress step (and a chance to cancel) each
REPORT_LINES = 64  # ranks listed in the report; the rest are summed up in one line


def _given(first, second, first_name: str, second_name: str, what: str) -> str:
    """Which one of two alternative inputs is connected (exactly one must be)."""
    if (first is None) == (second is None):
        state = (f"both {first_name} and {second_name} are connected" if first is not None
                 else f"neither {first_name} nor {second_name} is connected")
        raise ValueError(f"{what}: {state}; expected exactly one of them")
    return first_name if first is not None else second_name


def _image_vae(vae, image_name: str, metric: str):
    if vae is None:
        raise ValueError(f"{image_name} holds pictures but metric is '{metric}', which compares latents, and vae is "
                         "not connected; expected a vae to encode them, latents instead, or metric clip_cosine")
    if getattr(vae, "latent_dim", 2) != 2:
        raise ValueError(f"vae makes video latents, which would read a batch of pictures as the frames of one clip; "
                         f"expected an image VAE to encode {image_name}, or give latents")
    return vae


def _pictures(vae, latent: dict, latent_name: str) -> torch.Tensor:
    """A LATENT decoded to RGB [B, 3, H, W] (videos [B, T, 3, H, W]) float32."""
    if vae is None:
        raise ValueError(f"{latent_name} holds latents but metric is 'clip_cosine', which compares pictures, and vae "
                         "is not connected; expected a vae to decode them, pictures instead, or a latent metric")
    return vae_pictures(vae, latent["samples"], latent_name)


def _sorted_latent(latent: dict, order: torch.Tensor) -> dict:
    """The LATENT's items in ``order``; per-item keys (noise mask, batch index) follow their items."""
    samples = latent["samples"]
    out = new_latent(latent, samples[order.to(samples.device)])
    count = samples.shape[0]
    mask = latent.get("noise_mask")
    if mask is not None and mask.shape[0] == count > 1:
        out["noise_mask"] = mask[order.to(mask.device)]
    index = latent.get("batch_index")
    if index is not None and len(index) == count:
        out["batch_index"] = [index[i] for i in order.tolist()]
    return out


def _report(metric: str, query_count: int, query_name: str, batch_name: str, batch_count: int,
            order: list[int], distances: list[float]) -> str:
    what = {"latent_l2": "latent L2 distance", "latent_cosine": "latent cosine distance (1 − cos)",
            "clip_cosine": "CLIP cosine distance (1 − cos)"}[metric]
    query = f"{query_name} ({query_count} items, their mean)" if query_count > 1 else query_name
    lines = [f"{len(order)} of {batch_count} {batch_name} items by {what} to {query}, nearest first:"]
    lines += [f"{rank}. item {index}: {distance:.4g}"
              for rank, (index, distance) in enumerate(zip(order[:REPORT_LINES], distances), 1)]
    if len(order) > REPORT_LINES:
        lines.append(f"... {len(order) - REPORT_LINES} more, up to {distances[-1]:.4g}")
    return "\n".join(lines)


class LatentNearest(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_LatentNearest",
            display_name="Latent Nearest (LSC)",
            category=FAMILY,
            description="Rank a batch of latents or pictures by how close each is to a query (retrieval): in latent "
                        "space, or by what CLIP sees in the pictures. Outputs the batch sorted nearest first (or "
                        "only the top_k nearest), the distances and the ranking. Several query items stand for one "
                        "query: their mean.",
            inputs=[
                io.Combo.Input("metric", options=list(METRICS), default="latent_l2",
                               tooltip="latent_l2: Euclidean distance between the latents (pictures are encoded "
                                       "with vae); latent_cosine: 1 − cosine between them (ignores overall scale); "
                                       "clip_cosine: 1 − cosine between open_clip's image embeddings (latents are "
                                       "decoded with vae): what the pictures show, not where their pixels are"),
                io.Int.Input("top_k", default=0, min=0, max=4096,
                             tooltip="Keep only this many nearest items (0: the whole batch, sorted)"),
                io.Latent.Input("latent", optional=True,
                                tooltip="The batch to rank, as latents (connect this or image)"),
                io.Image.Input("image", optional=True,
                               tooltip="The batch to rank, as pictures (connect this or latent)"),
                io.Latent.Input("query_latent", optional=True,
                                tooltip="What to look for, as a latent of the same model and size as the batch "
                                        "(connect this or query_image); several items: their mean"),
                io.Image.Input("query_image", optional=True,
                               tooltip="What to look for, as a picture (connect this or query_latent); several "
                                       "pictures: their mean"),
                io.Vae.Input("vae", optional=True,
                             tooltip="Needed to encode pictures for a latent metric, or to decode latents for "
                                     "clip_cosine"),
                OPEN_CLIP.Input("open_clip", optional=True,
                                tooltip="The CLIP whose image embeddings clip_cosine compares (Open CLIP Loader)"),
            ],
            outputs=[
                io.Latent.Output(display_name="latent",
                                 tooltip="The ranked latents, nearest first: the given latents, or the pictures "
                                         "encoded for a latent metric; None when pictures were ranked by CLIP"),
                io.Image.Output(display_name="image",
                                tooltip="The ranked pictures, nearest first: the given pictures, or the latents "
                                        "decoded for clip_cosine or by a connected vae; None when latents were "
                                        "ranked in latent space without a vae"),
                io.String.Output(display_name="report", tooltip="Rank, batch index and distance of each item"),
                io.String.Output(display_name="indices",
                                 tooltip="The batch indices in ranked order, comma-separated (0-based)"),
                io.Int.Output(display_name="nearest_index", tooltip="The batch index of the nearest item (0-based)"),
                io.Float.Output(display_name="nearest_distance", tooltip="The nearest item's distance to the query"),
            ],
        )

    @classmethod
    def execute(cls, metric, top_k, latent=None, image=None, query_latent=None, query_image=None, vae=None,
                open_clip=None) -> io.NodeOutput:
        batch_name = _given(latent, image, "latent", "image", "the batch to rank")
        query_name = _given(query_latent, query_image, "query_latent", "query_image", "the query")
        for value, name in ((latent, "latent"), (image, "image"), (query_latent, "query_latent"),
                            (query_image, "query_image")):
            if value is not None:
                require_batch(value["samples"] if isinstance(value, dict) else value, name)
        where = comfy.model_management.intermediate_device()
        sorted_latent = sorted_image = None
        if metric == "clip_cosine":
            if open_clip is None:
                raise ValueError("metric is 'clip_cosine' but open_clip is not connected; expected an Open CLIP "
                                 "Loader connected to open_clip, or a latent metric")
            pictures = (image_channels_first(image, "image") if image is not None
                        else _pictures(vae, latent, "latent"))
            query = (image_channels_first(query_image, "query_image") if query_image is not None
                     else _pictures(vae, query_latent, "query_latent"))
            score = open_clip.image_scorer()
            progress = LoopProgress(math.ceil(math.prod(pictures.shape[:-3]) / EMBED_CHUNK))
            batch_rows = item_embeddings(score, pictures, EMBED_CHUNK, progress).to(where)
            query_rows = item_embeddings(score, query, EMBED_CHUNK).to(where)
            ranking = nearest(query_rows, batch_rows, "cosine", top_k, query_name, batch_name)
            order = ranking.order
            ranked_pictures = pictures.to(where)[order]
            sorted_image = ranked_pictures.movedim(-3, -1).reshape(-1, *ranked_pictures.shape[-2:], 3)
            if latent is not None:
                sorted_latent = _sorted_latent(latent, order)
        else:
            samples = (latent["samples"] if latent is not None
                       else _image_vae(vae, "image", metric).encode(image[..., :3]))
            query = (query_latent["samples"] if query_latent is not None
                     else _image_vae(vae, "query_image", metric).encode(query_image[..., :3]))
            ranking = nearest(query.to(where).float(), samples.to(where).float(), metric.split("_")[1], top_k,
                              query_name, batch_name)
            order = ranking.order
            sorted_latent = (_sorted_latent(latent, order) if latent is not None
                             else {"samples": samples.to(where)[order]})
            if image is not None:
                sorted_image = image[order.to(image.device)]
            elif vae is not None:  # the ranked latents as pictures too, to preview them
                ranked = vae_pictures(vae, sorted_latent["samples"]).to(where)
                sorted_image = ranked.movedim(-3, -1).reshape(-1, *ranked.shape[-2:], 3)
        order_list, distances = ranking.order.tolist(), ranking.distances.tolist()
        batch_count = (latent["samples"] if latent is not None else image).shape[0]
        report = _report(metric, query.shape[0], query_name, batch_name, batch_count, order_list, distances)
        return io.NodeOutput(sorted_latent, sorted_image, report, ", ".join(map(str, order_list)), order_list[0],
                             distances[0], ui=ui.PreviewText(report))


NODES = [LatentNearest]
