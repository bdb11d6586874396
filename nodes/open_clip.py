"""Open CLIP Loader (LSC): an open_clip CLIP from a local file (models/open_clip), under ComfyUI's model management,
for the nodes that score text and images with CLIP."""

from __future__ import annotations

import torch
from comfy_api.latest import io

import comfy.model_management
import comfy.model_patcher

from ..core.open_clip_loading import WEIGHT_EXTENSIONS, OpenClip, architectures, read_open_clip
from ..reference.models import CLIP_NAME, WEIGHTS, register_clip_config
from .common import CATEGORY
from .model_folders import OPEN_CLIP_FOLDER, file_in, files_in, folder_paths, register_folders

OPEN_CLIP = io.Custom("LSC_OPEN_CLIP")
REFERENCE_WEIGHTS = "reference (shipped with the pack)"
REFERENCE_FOLDER = WEIGHTS / "clip"  # the shipped CLIP: its weights and its tokenizer


register_folders()


class OpenClipModel:
    """The LSC_OPEN_CLIP value: an open_clip CLIP (model in eval mode, tokenizer, image preprocessing) whose model
    ComfyUI's model management moves between its load and offload devices, as it does ComfyUI's CLIP vision models.
    ``text_encoder()`` and ``image_scorer()`` give the engine's callables; each call first puts the model on its
    device (``load()``), so other models can take the memory between calls. Treat it as read-only: ComfyUI caches
    it and hands the same object to every node that uses it."""

    def __init__(self, clip: OpenClip):
        self.clip = clip
        offload = comfy.model_management.text_encoder_offload_device()
        self.patcher = comfy.model_patcher.ModelPatcher(clip.model.to(offload),
                                                        load_device=comfy.model_management.text_encoder_device(),
                                                        offload_device=offload)

    @property
    def model(self) -> torch.nn.Module:
        return self.clip.model

    @property
    def tokenizer(self):
        return self.clip.tokenizer

    @property
    def preprocess(self) -> dict:
        return self.clip.preprocess

    def load(self) -> torch.device:
        """Put the whole model on its load device (ComfyUI frees memory for it if needed); that device."""
        comfy.model_management.load_models_gpu([self.patcher], force_full_load=True)
        return self.patcher.load_device

    def text_encoder(self):
        """``prompts -> TextEncoding`` (hidden states [B, tokens, width], unit embeddings [B, embed]) on the model's
        device."""
        encode = self.clip.text_encoder()

        def managed(prompts: list[str]):
            self.load()
            return encode(prompts)

        return managed

    def image_scorer(self):
        """``RGB [B, 3, H, W] in 0..1 -> unit embeddings [B, embed]`` on the model's device. The loader runs under
        ComfyUI's inference mode, so the weights are inference tensors: gradients need a copy of the model made
        outside it."""
        score = self.clip.image_scorer()

        def managed(image: torch.Tensor) -> torch.Tensor:
            return score(image.to(self.load()))

        return managed


def weight_choices() -> list[str]:
    return [REFERENCE_WEIGHTS, *files_in(folder_paths.get_folder_paths(OPEN_CLIP_FOLDER), WEIGHT_EXTENSIONS)]


def weights_path(architecture: str, weights: str) -> str:
    """The file ``weights`` names: the shipped reference CLIP, or a file of the open_clip model folders."""
    if weights == REFERENCE_WEIGHTS:
        if architecture != CLIP_NAME:
            raise ValueError(f"weights is {REFERENCE_WEIGHTS!r}, the pack's reference CLIP, whose architecture is "
                             f"{CLIP_NAME}, but architecture is {architecture!r}; expected architecture {CLIP_NAME}, "
                             f"or a file of models/open_clip made for {architecture} as weights")
        return str(REFERENCE_FOLDER / "open_clip_model.safetensors")
    path = file_in(folder_paths.get_folder_paths(OPEN_CLIP_FOLDER), weights)
    if path is None:
        raise ValueError(f"weights is {weights!r}, which is not a file in the open_clip model folders "
                         f"({', '.join(map(str, folder_paths.get_folder_paths(OPEN_CLIP_FOLDER)))}); expected one of "
                         "their files (nothing is downloaded)")
    return str(path)


class OpenCLIPLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_OpenCLIPLoader",
            display_name="Open CLIP Loader (LSC)",
            category=f"{CATEGORY}/loaders",
            description="An open_clip CLIP (text and image towers) from a local file, for the nodes that score "
                        "prompts and pictures with CLIP: semantic directions, latent optimisation. Nothing is "
                        "downloaded: put open_clip checkpoints (open_clip_model.safetensors or "
                        "open_clip_pytorch_model.bin from an open_clip model page) in models/open_clip. The pack's "
                        "small reference CLIP is built in.",
            inputs=[
                io.Combo.Input("architecture", options=[CLIP_NAME, *architectures()], default=CLIP_NAME,
                               tooltip="The open_clip architecture the weights were trained as; the model page names "
                                       "it (e.g. ViT-L-14, ViT-H-14, ViT-bigG-14, ViT-B-16-SigLIP). "
                                       f"{CLIP_NAME} is the pack's reference CLIP"),
                io.Combo.Input("weights", options=weight_choices(), default=REFERENCE_WEIGHTS,
                               tooltip="An open_clip checkpoint in models/open_clip (.safetensors, or .pt/.pth/.bin "
                                       "read as plain tensors). Architectures with a Hugging Face tokenizer (SigLIP, "
                                       "...) need its files (tokenizer.json, tokenizer_config.json, ...) in the same "
                                       f"folder. '{REFERENCE_WEIGHTS}' is the built-in reference CLIP ({CLIP_NAME})"),
            ],
            outputs=[OPEN_CLIP.Output(display_name="open_clip",
                                      tooltip="The CLIP with its tokenizer and image preprocessing, float32, managed "
                                              "by ComfyUI like its text encoders")],
        )

    @classmethod
    def execute(cls, architecture: str, weights: str) -> io.NodeOutput:
        path = weights_path(architecture, weights)
        tokenizer_folder = None
        if architecture == CLIP_NAME:  # open_clip knows it once registered; its tokenizer is the shipped one
            register_clip_config()
            tokenizer_folder = REFERENCE_FOLDER
        return io.NodeOutput(OpenClipModel(read_open_clip(architecture, path, tokenizer_folder)))


NODES = [OpenCLIPLoader]
