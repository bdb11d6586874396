"""Text steering nodes: Hugging Face causal language models under ComfyUI's model management, steered while they
write (a vector added to the output of chosen transformer blocks), and llama.cpp control vectors saved and loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from comfy_api.latest import io, ui

import comfy.model_management
import comfy.model_patcher
import comfy.utils

from ..core import gguf, steering
from ..core.directions import Direction, require_spaces
from ..core.optional import require_package
from ..reference.models import WEIGHTS
from .common import CATEGORY, prompt_lines
from .directions import DIRECTION
from .steer import method_input
from .model_folders import (CONTROL_VECTOR_EXTENSION, DIRECTIONS_FOLDER, LLM_FOLDER, control_vector_files,
                            control_vector_path, llm_folder, llm_folders, new_numbered_path)

FAMILY = f"{CATEGORY}/steer"
CAUSAL_LM = io.Custom("LSC_CAUSAL_LM")
CAUSAL_LM_FAMILY = "causal_lm"  # Direction.family of hidden-state directions for language models
REFERENCE_LM = "reference (built-in)"
REFERENCE_FOLDER = WEIGHTS / "lm"
DTYPES = {"auto": None, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
AUTO_LAYERS = "auto"
# The files a Hugging Face tokenizer is read from (fast, sentencepiece, BPE, WordPiece); transformers 5 builds an
# empty tokenizer, without an error, from a folder that has none of them.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt")


class ModelHolder(torch.nn.Module):
    """A Hugging Face model as ComfyUI's ModelPatcher can hold it: the patcher sets ``model.device``, which a
    PreTrainedModel has as a read-only property, so the model sits inside as ``inner``."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        super().__init__()
        self.inner = model
        self.device = device


@dataclass(frozen=True)
class CausalLM:
    """The LSC_CAUSAL_LM value: a Hugging Face causal LM whose weights ComfyUI's model management moves between its
    load and offload devices, with its tokenizer. ComfyUI caches it and hands the same object to every node that
    uses it: treat it as read-only."""
    patcher: comfy.model_patcher.ModelPatcher
    tokenizer: object
    name: str
    model_type: str  # the HF config.model_type: a direction's encoder, a control vector's model_hint
    blocks: int  # how many transformer blocks it has

    @property
    def model(self) -> torch.nn.Module:
        return self.patcher.model.inner

    @property
    def width(self) -> int:
        """The width of its hidden states (the residual stream a steering vector is added to)."""
        return self.model.config.hidden_size

    def load(self) -> torch.nn.Module:
        """The model on its load device (ComfyUI frees memory for it if needed)."""
        comfy.model_management.load_models_gpu([self.patcher], force_full_load=True)
        return self.model


def lm_blocks(model: torch.nn.Module, name: str) -> torch.nn.ModuleList:
    """The language model's stack of blocks, found from its input embedding (a vision tower beside it is not it)."""
    return steering.transformer_blocks(model, name, model.get_input_embeddings())[1]


def managed_lm(model: torch.nn.Module, tokenizer, name: str) -> CausalLM:
    """``model`` (in eval mode) under ComfyUI's model management, parked on the offload device until used."""
    offload = comfy.model_management.unet_offload_device()
    holder = ModelHolder(model.eval().to(offload), offload)
    patcher = comfy.model_patcher.ModelPatcher(holder, load_device=comfy.model_management.get_torch_device(),
                                               offload_device=offload)
    return CausalLM(patcher, tokenizer, name, model.config.model_type, len(lm_blocks(model, name)))


def model_choices() -> list[str]:
    return [REFERENCE_LM, *llm_folders()]


def load_dtype(dtype: str, device: torch.device):
    """What ``from_pretrained`` loads as: auto is the checkpoint's own dtype on a GPU and float32 on the CPU (which
    computes half precision slowly, if at all)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype is '{dtype}'; expected one of {', '.join(DTYPES)}")
    if dtype == "auto":
        return torch.float32 if comfy.model_management.is_device_cpu(device) else "auto"
    return DTYPES[dtype]


def read_causal_lm(folder: Path, name: str, dtype) -> tuple[torch.nn.Module, object]:
    """A causal LM and its tokenizer from a Hugging Face folder, from local files only (nothing is downloaded)."""
    transformers = require_package("transformers", "transformers", "the Causal LM Loader")
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if not (folder / "config.json").is_file():
        raise ValueError(f"model '{name}' has no config.json; expected a Hugging Face model folder (config.json, "
                         "the weights and the tokenizer files)")
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"model '{name}': its config.json cannot be read by transformers "
                         f"{transformers.__version__} ({error})") from error
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        architectures = ", ".join(getattr(config, "architectures", None) or []) or "no architectures listed"
        raise ValueError(f"model '{name}' is a '{config.model_type}' model ({architectures}), not a causal language "
                         "model; expected a text-generation model such as GPT-2, Llama, Qwen2 or Mistral")
    if not any((folder / file).is_file() for file in TOKENIZER_FILES):
        raise ValueError(f"model '{name}' has no tokenizer; expected its tokenizer files in the same folder (one of "
                         f"{', '.join(TOKENIZER_FILES)}, with tokenizer_config.json)")
    # transformers 5 names the argument dtype (and warns at torch_dtype); 4.x before 4.56 knows only torch_dtype
    dtype_argument = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True,
                                                                  **{dtype_argument: dtype})
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ValueError(f"model '{name}' cannot be loaded ({error})") from error
    return model, tokenizer


class CausalLMLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_CausalLMLoader",
            display_name="Causal LM Loader (LSC)",
            category=FAMILY,
            description=f"A Hugging Face language model (GPT-2, Llama, Qwen2, Mistral, ...) from a folder in "
                        f"models/{LLM_FOLDER}, for Text Steer Generate. Nothing is downloaded: put the model's "
                        "folder (config.json, the weights, the tokenizer files) there. The pack's small reference LM "
                        "is built in.",
            inputs=[
                io.Combo.Input("model", options=model_choices(), default=REFERENCE_LM,
                               tooltip=f"A folder in models/{LLM_FOLDER} (any depth) holding a config.json; "
                                       f"'{REFERENCE_LM}' is the pack's reference LM (2 blocks, writes joyful and "
                                       "gloomy sentences about shapes)"),
                io.Combo.Input("dtype", options=list(DTYPES), default="auto",
                               tooltip="Weight precision. auto: the checkpoint's own on a GPU, float32 on the CPU"),
            ],
            outputs=[CAUSAL_LM.Output(display_name="lm", tooltip="The language model and its tokenizer")],
        )

    @classmethod
    def execute(cls, model, dtype) -> io.NodeOutput:
        folder = REFERENCE_FOLDER if model == REFERENCE_LM else llm_folder(model)
        hf_model, tokenizer = read_causal_lm(folder, model, load_dtype(dtype, comfy.model_management.get_torch_device()))
        lm = managed_lm(hf_model, tokenizer, model)
        return io.NodeOutput(lm, ui=ui.PreviewText(f"{model}: {lm.model_type}, {lm.blocks} blocks, {lm.width}-wide, "
                                                   f"{next(hf_model.parameters()).dtype}"))


def check_direction(direction: Direction, lm: CausalLM) -> torch.Tensor:
    """The direction's hidden vectors, after checking they were made for a model like ``lm``."""
    require_spaces(direction, ("hidden",))
    hidden = direction.vectors["hidden"]
    if direction.family and direction.family != CAUSAL_LM_FAMILY:
        raise ValueError(f"direction was made for a {direction.family} text encoder "
                         f"({direction.encoder or 'unknown encoder'}), not a language model; expected a direction "
                         f"of family {CAUSAL_LM_FAMILY} (from examples, or Load Control Vector)")
    if direction.encoder and direction.encoder != lm.model_type:
        raise ValueError(f"direction was made for a '{direction.encoder}' model, but lm is '{lm.name}', a "
                         f"'{lm.model_type}' model; expected a direction made for this model")
    if hidden.shape[-1] != lm.width:
        raise ValueError(f"direction is {hidden.shape[-1]}-wide, but lm ('{lm.name}') has {lm.width}-wide hidden "
                         "states; expected a direction made for this model")
    return hidden


def chosen_layers(layers: str, lm: CausalLM, direction: Direction | None) -> list[int] | None:
    """The blocks to steer: auto is a direction's own blocks (None) where it records some, else the default block;
    empty is the direction's own."""
    spec = layers.strip()
    if spec == AUTO_LAYERS:
        return None if direction is not None and direction.layer.strip() else [steering.default_block(lm.blocks)]
    if not spec:
        if direction is None:
            raise ValueError("layers is empty, which means the direction's own blocks, but no direction is "
                             "connected; expected auto or block numbers like 3, 2-4 or 1,3,5")
        return None
    return steering.parse_layers(spec, lm.blocks, "layers", f"lm ('{lm.name}')")


class TextSteerGenerate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_TextSteerGenerate",
            display_name="Text Steer Generate (LSC)",
            category=FAMILY,
            description="Let a language model continue a prompt while a steering vector is added to the output of "
                        "chosen transformer blocks (activation steering, as repeng and llama.cpp control vectors "
                        "do). The vector is a direction (e.g. Load Control Vector), or the difference between what "
                        "the model makes of positive and of negative examples, computed here. Writes the same "
                        "continuation unsteered too, with the same seed, to compare.",
            inputs=[
                CAUSAL_LM.Input("lm", tooltip="The language model (Causal LM Loader)"),
                io.String.Input("prompt", multiline=True, default="a",
                                tooltip="The text the model continues"),
                io.Float.Input("strength", default=1.0, min=-100.0, max=100.0, step=0.05,
                               tooltip="How much of the vector to add; negative steers the other way"),
                io.String.Input("layers", default=AUTO_LAYERS,
                                tooltip="The transformer blocks to steer (0-based): auto is a connected "
                                        "direction's own blocks, else (examples) the block a third of the way up; "
                                        "or 3, 2-4, 1,3,5, -1 (the last); empty: the direction's own blocks"),
                method_input("example", "; unused with a direction"),
                io.Int.Input("max_new_tokens", default=24, min=1, max=4096,
                             tooltip="At most this many new tokens (fewer when the model ends its text)"),
                io.Float.Input("temperature", default=1.0, min=0.0, max=5.0, step=0.05,
                               tooltip="Sampling temperature; 0 always takes the likeliest token (greedy)"),
                io.Float.Input("top_p", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Sample only from the likeliest tokens that make up this share of the "
                                       "probability (1: all tokens)"),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="The sampling seed; the steered and the unsteered text both use it"),
                io.Boolean.Input("include_prompt", default=False,
                                 tooltip="On: the texts are the prompt and its continuation (for a prompt that "
                                         "begins the text, e.g. 'a'); off: only what the model wrote (for an "
                                         "instruction such as 'Describe a landscape:')"),
                DIRECTION.Input("direction", optional=True,
                                tooltip="A hidden-state direction for this model (Load Control Vector, or this "
                                        "node's own direction output); leave the examples empty when connected"),
                io.String.Input("positive_examples", multiline=True, default="", optional=True,
                                tooltip="Without a direction: texts showing what to steer towards, one per line"),
                io.String.Input("negative_examples", multiline=True, default="", optional=True,
                                tooltip="Without a direction: texts showing what to steer away from, one per line"),
            ],
            outputs=[
                io.String.Output(display_name="text", tooltip="The steered text (with the prompt if include_prompt)"),
                io.String.Output(display_name="unsteered", tooltip="The same without steering, same seed"),
                DIRECTION.Output(display_name="direction",
                                 tooltip="The direction used (from examples: save it with Save Control Vector)"),
            ],
        )

    @classmethod
    def execute(cls, lm, prompt, strength, layers, method, max_new_tokens, temperature, top_p, seed, include_prompt,
                direction=None, positive_examples="", negative_examples="") -> io.NodeOutput:
        positive, negative = prompt_lines(positive_examples or ""), prompt_lines(negative_examples or "")
        if direction is not None and (positive or negative):
            raise ValueError("a direction is connected and examples are written; expected one steering source: the "
                             "direction, or positive_examples and negative_examples")
        if direction is None and not (positive and negative):
            missing = " and ".join(name for name, texts in (("positive_examples", positive),
                                                           ("negative_examples", negative)) if not texts)
            raise ValueError(f"{missing} {'is' if ' and ' not in missing else 'are'} empty and no direction is "
                             "connected; expected a direction, or examples in both (one per line)")
        wanted = chosen_layers(layers, lm, direction)
        prompt_length = steering.prompt_ids(lm.tokenizer, prompt).shape[1]
        limit = getattr(lm.model.config, "max_position_embeddings", None)
        if limit is not None and prompt_length + max_new_tokens > limit:
            raise ValueError(f"the prompt ({prompt_length} tokens) and max_new_tokens ({max_new_tokens}) exceed the "
                             f"{limit} positions lm ('{lm.name}') can read; expected max_new_tokens of at most "
                             f"{max(limit - prompt_length, 0)}")

        model = lm.load()
        blocks = lm_blocks(model, lm.name)
        if direction is None:
            direction = cls.direction_from_examples(lm, model, blocks, positive, negative, wanted, method)
        hidden = check_direction(direction, lm)
        vectors = steering.layer_vectors(hidden, direction.layer, wanted, lm.blocks, f"lm ('{lm.name}')")

        bar = comfy.utils.ProgressBar(2 * max_new_tokens)

        def progress(offset):
            def on_token(count):
                comfy.model_management.throw_exception_if_processing_interrupted()
                bar.update_absolute(offset + count, 2 * max_new_tokens)
            return on_token

        settings = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                        include_prompt=include_prompt)
        unsteered = steering.generate_text(model, lm.tokenizer, prompt, **settings, on_token=progress(0))[0]
        with steering.steering(blocks, vectors, strength):
            text = steering.generate_text(model, lm.tokenizer, prompt, **settings,
                                          on_token=progress(max_new_tokens))[0]
        bar.update_absolute(2 * max_new_tokens, 2 * max_new_tokens)
        shown = f"steered (blocks {steering.format_layers(vectors)}, strength {strength:g}):\n{text}\n\n" \
                f"unsteered:\n{unsteered}"
        return io.NodeOutput(text, unsteered, direction, ui=ui.PreviewText(shown))

    @staticmethod
    def direction_from_examples(lm: CausalLM, model: torch.nn.Module, blocks: torch.nn.ModuleList,
                                positive: list[str], negative: list[str], layers: list[int],
                                method: str) -> Direction:
        """One vector per chosen block from the examples' mean hidden states there."""
        positive_states = steering.example_states(model, lm.tokenizer, positive, blocks, layers)
        negative_states = steering.example_states(model, lm.tokenizer, negative, blocks, layers)
        vectors = torch.stack([steering.steering_vector(positive_states[layer], negative_states[layer], method)
                               for layer in layers]).cpu()
        return Direction({"hidden": vectors}, family=CAUSAL_LM_FAMILY, encoder=lm.model_type,
                         layer=steering.format_layers(layers),
                         provenance={"method": method, "positive": "\n".join(positive),
                                     "negative": "\n".join(negative), "model": lm.name})


class SaveControlVector(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_SaveControlVector",
            display_name="Save Control Vector GGUF (LSC)",
            category=FAMILY,
            description=f"Save a language-model direction as a llama.cpp control vector (.gguf) in "
                        f"models/{DIRECTIONS_FOLDER}, for llama.cpp's --control-vector and repeng. One vector per "
                        "block the direction lists; llama.cpp cannot steer block 0.",
            inputs=[
                DIRECTION.Input("direction", tooltip="A hidden-state direction of a language model (Text Steer "
                                                     "Generate's direction output)"),
                io.String.Input("filename_prefix", default="control_vectors/steer",
                                tooltip="File name; a counter and .gguf are added (steer_00001.gguf). May include "
                                        "a subfolder"),
                io.String.Input("model_hint", default="",
                                tooltip="The model's HF model_type written into the file (repeng requires it); "
                                        "empty: the model the direction was made for"),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, direction, filename_prefix, model_hint) -> io.NodeOutput:
        require_spaces(direction, ("hidden",))
        if not steering.recorded_blocks(direction.layer):
            raise ValueError("direction records no blocks, so there is nothing to say where each vector goes; "
                             "expected a language-model direction (Text Steer Generate or Load Control Vector)")
        vectors = steering.layer_vectors(direction.vectors["hidden"], direction.layer, None)
        hint = model_hint.strip() or direction.encoder
        path = new_numbered_path(filename_prefix, CONTROL_VECTOR_EXTENSION)
        gguf.write_control_vector(path, vectors, hint)
        return io.NodeOutput(ui=ui.PreviewText(f"saved {path}: blocks {steering.format_layers(vectors)}, "
                                               f"{direction.vectors['hidden'].shape[-1]}-wide, model_hint '{hint}'"))


class LoadControlVector(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_LoadControlVector",
            display_name="Load Control Vector GGUF (LSC)",
            category=FAMILY,
            description=f"Load a llama.cpp control vector (.gguf, from llama.cpp, repeng or Save Control Vector) "
                        f"from models/{DIRECTIONS_FOLDER}, as a direction for Text Steer Generate.",
            inputs=[io.Combo.Input("file", options=control_vector_files(),
                                   tooltip=f"A .gguf control vector in models/{DIRECTIONS_FOLDER} (any subfolder)")],
            outputs=[DIRECTION.Output(display_name="direction",
                                      tooltip="One vector per block the file steers, for the model it names")],
        )

    @classmethod
    def execute(cls, file) -> io.NodeOutput:
        control = gguf.read_control_vector(control_vector_path(file))
        layers = sorted(control.vectors)
        direction = Direction({"hidden": torch.stack([control.vectors[layer] for layer in layers])},
                              family=CAUSAL_LM_FAMILY, encoder=control.model_hint,
                              layer=steering.format_layers(layers),
                              provenance={"method": "GGUF control vector", "file": file})
        return io.NodeOutput(direction, ui=ui.PreviewText(
            f"{file}: blocks {direction.layer}, {direction.vectors['hidden'].shape[-1]}-wide, "
            f"model_hint '{control.model_hint or '(none)'}'"))


NODES = [CausalLMLoader, TextSteerGenerate, SaveControlVector, LoadControlVector]
