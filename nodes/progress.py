"""Progress and interruption for the pack's long loops: ComfyUI's progress bar (with a preview picture now and then)
and its interrupt button, checked at every step."""

from __future__ import annotations

from typing import Callable

import torch
from PIL import Image

import comfy.model_management
import comfy.utils

PREVIEW_EVERY = 5  # steps between previews: a preview costs a decode
PREVIEW_SIZE = 512


class LoopProgress:
    """``progress(step, steps, value)`` for an engine loop: raises ComfyUI's interrupt exception when the user
    pressed Cancel, moves the node's progress bar, and shows ``preview(value)`` (RGB [1, 3, H, W] in 0..1)."""

    def __init__(self, steps: int, preview: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.bar = comfy.utils.ProgressBar(steps)
        self.preview = preview

    def __call__(self, step: int, steps: int, value: torch.Tensor) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        picture = None
        if self.preview is not None and (step % PREVIEW_EVERY == 0 or step == steps):
            with torch.no_grad():
                rgb = self.preview(value)[0].clamp(0, 1).movedim(0, -1)
            picture = ("JPEG", Image.fromarray((rgb * 255).round().byte().cpu().numpy()), PREVIEW_SIZE)
        self.bar.update_absolute(step, steps, picture)
