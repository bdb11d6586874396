"""open_clip CLIPs read from local files: an architecture open_clip knows by name, weights from a checkpoint file, and
nothing fetched from the internet, ever.

open_clip downloads whenever it is given a pretrained tag, a Hugging Face text tower or a Hugging Face tokenizer
name; here the weights are always a file, architectures with a Hugging Face text tower are not offered, and a
Hugging Face tokenizer is read from its files in a local folder.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .adapters import TextEncoding, open_clip_image_scorer, open_clip_text_encoder
from .optional import require_package

WEIGHT_EXTENSIONS = (".safetensors", ".pt", ".pth", ".bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
# What open_clip records per published weights about their image preprocessing (the image size is the model's).
PREPROCESSING_KEYS = ("mean", "std", "interpolation", "resize_mode")


@dataclass(frozen=True, eq=False)
class OpenClip:
    """An open_clip CLIP ready to score: the model in eval mode with frozen weights, its tokenizer, and the image
    preprocessing its weights were trained with (``size``, ``mean``, ``std``, ... as open_clip records it)."""
    model: torch.nn.Module
    tokenizer: Callable[[list[str]], torch.Tensor]
    preprocess: dict
    architecture: str
    weights: str

    def text_encoder(self) -> Callable[[list[str]], TextEncoding]:
        return open_clip_text_encoder(self.model, self.tokenizer)

    def image_scorer(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return open_clip_image_scorer(self.model)


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name.lower())]


def architectures() -> list[str]:
    """The architectures open_clip ships configs for (``open_clip.list_models()``), read from its config files without
    importing open_clip (which takes seconds), less those whose text tower is a Hugging Face model: open_clip fetches
    that model's config from the internet to build them. Empty when open_clip is not installed."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return []
    names = []
    for path in Path(next(iter(spec.submodule_search_locations)), "model_configs").glob("*.json"):
        config = json.loads(path.read_text(encoding="utf-8"))
        if "hf_model_name" not in config.get("text_cfg", {}):
            names.append(path.stem)
    return sorted(names, key=_natural_key)


def architecture_config(open_clip, architecture: str) -> dict:
    """open_clip's config of ``architecture``; a clear error for names it does not know or cannot build offline."""
    config = open_clip.get_model_config(architecture)
    if config is None:
        raise ValueError(f"architecture is {architecture!r}, which open_clip {open_clip.__version__} does not know; "
                         "expected one of its architectures (open_clip.list_models()), e.g. ViT-B-32 or ViT-L-14")
    if "hf_model_name" in config.get("text_cfg", {}):
        raise ValueError(f"architecture {architecture!r} builds its text tower from the Hugging Face model "
                         f"{config['text_cfg']['hf_model_name']!r}, which open_clip fetches from the internet; "
                         "expected an architecture open_clip defines by itself (this loader never downloads)")
    return config


def trained_preprocessing(open_clip, architecture: str) -> dict:
    """The image preprocessing open_clip records for the architecture's published weights: the most common one when
    they differ (a file does not say which of them it holds); empty (open_clip's defaults) when none are published."""
    counts = Counter()
    for tag in open_clip.list_pretrained_tags_by_model(architecture):
        config = open_clip.get_pretrained_cfg(architecture, tag)
        counts[tuple((key, tuple(value) if isinstance(value, list) else value)
                     for key, value in config.items() if key in PREPROCESSING_KEYS)] += 1
    return dict(counts.most_common(1)[0][0]) if counts else {}


def read_tokenizer(open_clip, architecture: str, text_config: dict, folder: Path):
    """The architecture's tokenizer: open_clip's own vocabulary (shipped with it), or a Hugging Face tokenizer read
    from its files in ``folder``."""
    hub_name = text_config.get("hf_tokenizer_name")
    if not hub_name:
        return open_clip.get_tokenizer(architecture)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(
            f"architecture {architecture!r} uses the Hugging Face tokenizer {hub_name!r}, whose files are not in "
            f"{folder}; expected its {' and '.join(TOKENIZER_FILES)} (from the model's page, where the open_clip "
            "weights are) in that folder, beside the weights: this loader never downloads")
    from open_clip.tokenizer import HFTokenizer

    return HFTokenizer(str(folder), context_length=text_config.get("context_length"),
                       tokenizer_mode=text_config.get("tokenizer_mode"), **text_config.get("tokenizer_kwargs", {}))


def fit_report(open_clip, architecture: str, path: Path) -> str:
    """How the file's tensors differ from those of the architecture (built on the meta device: no memory, no
    weights), counted, with a few names."""
    state = open_clip.factory.load_state_dict(str(path), weights_only=True)
    with torch.device("meta"):
        expected = open_clip.create_model(architecture, device="meta").state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    reshaped = sorted(key for key in expected.keys() & state.keys()
                      if tuple(expected[key].shape) != tuple(state[key].shape))
    if not (missing or unexpected or reshaped):
        return ""
    examples = [*missing[:2], *unexpected[:2], *reshaped[:2]]
    return (f"{len(missing)} of the model's {len(expected)} tensors are missing from the file, {len(unexpected)} of "
            f"the file's {len(state)} tensors have no place in the model and {len(reshaped)} have another shape "
            f"(e.g. {', '.join(examples)})")


def build_with_weights(open_clip, architecture: str, path: Path) -> torch.nn.Module:
    """The architecture with the checkpoint's weights, loaded by open_clip from the file (every tensor must fit);
    pickled checkpoints are read as plain tensors only, so a file cannot run code. A file path is never taken for a
    pretrained tag: tags are short names, the path is absolute."""
    try:
        return open_clip.create_model(architecture, pretrained=str(path.resolve()), weights_only=True,
                                      pretrained_image=False, pretrained_text=False,
                                      force_preprocess_cfg=trained_preprocessing(open_clip, architecture))
    except Exception as error:  # safetensors, pickle and load_state_dict each report a bad file their own way
        cause = f"{type(error).__name__}: {str(error)[:400]}"
        try:
            report = fit_report(open_clip, architecture, path)
        except Exception as read_error:
            raise ValueError(
                f"weights: {path} is not a readable open_clip checkpoint ({type(read_error).__name__}: {read_error}); "
                "expected a safetensors file, or a .pt/.pth/.bin file holding tensors only") from None
        if not report:
            raise ValueError(f"weights: {path} could not be loaded as architecture {architecture!r} ({cause})") \
                from None
        raise ValueError(
            f"weights: {path} does not fit architecture {architecture!r}: {report}. Expected the open_clip "
            f"weights of {architecture}: choose the architecture the file was trained as (its model page names it), "
            "or a file made for this one; a transformers CLIP (model.safetensors) or a ComfyUI clip_vision file is not "
            f"an open_clip checkpoint. ({cause})") from None


def read_open_clip(architecture: str, weights: str | Path, tokenizer_folder: str | Path | None = None) -> OpenClip:
    """An open_clip CLIP of ``architecture`` (a name open_clip knows) with the weights in the file ``weights``,
    in float32 on the CPU. A Hugging Face tokenizer, where the architecture has one, is read from
    ``tokenizer_folder`` (default: the folder of ``weights``). Reads local files only."""
    open_clip = require_package("open_clip", "open_clip_torch", "open_clip models")
    config = architecture_config(open_clip, architecture)
    path = Path(weights)
    if not path.is_file():
        raise ValueError(f"weights: {path} is not a file; expected a local open_clip checkpoint "
                         f"({', '.join(WEIGHT_EXTENSIONS)}). Only files are read: nothing is downloaded, so "
                         "open_clip's pretrained tags such as 'openai' or 'laion2b_s34b_b79k' are not accepted")
    if path.suffix.lower() not in WEIGHT_EXTENSIONS:
        raise ValueError(f"weights: {path.name} has the extension {path.suffix!r}; expected one of "
                         f"{', '.join(WEIGHT_EXTENSIONS)} (an open_clip checkpoint)")
    if "timm_model_name" in config["vision_cfg"]:
        require_package("timm", "timm", f"the open_clip architecture {architecture} (its image tower comes from timm)")
    folder = Path(tokenizer_folder) if tokenizer_folder is not None else path.parent
    tokenizer = read_tokenizer(open_clip, architecture, config["text_cfg"], folder)
    model = build_with_weights(open_clip, architecture, path).eval().requires_grad_(False)
    return OpenClip(model, tokenizer, dict(model.visual.preprocess_cfg), architecture, str(path))
