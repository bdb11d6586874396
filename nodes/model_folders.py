"""The pack's model folders in ComfyUI: open_clip checkpoints, direction files (saved and loaded; ConDelta's read)."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.open_clip_loading import WEIGHT_EXTENSIONS

try:  # the pip-installable fork keeps it inside its package (a top-level alias may not exist yet at load time)
    from comfy.cmd import folder_paths
except ImportError:
    import folder_paths

DIRECTIONS_FOLDER = "latent_directions"
OPEN_CLIP_FOLDER = "open_clip"
CONDELTA_FOLDER = "ConDelta"  # ComfyUI-ConDelta's folder: its files load as directions too


def register_folder(name: str, extensions: set[str]) -> None:
    """models/<name> as a ComfyUI model folder listing files with these extensions, beside any paths a user gave it
    (extra_model_paths.yaml); calling it again changes nothing."""
    try:  # the fork: models/<name> under each of its base paths
        folder_paths.add_model_folder_path(name, extensions=set(extensions))
    except TypeError:  # upstream's add_model_folder_path takes no extensions
        default = os.path.join(folder_paths.models_dir, name)
        paths, known = folder_paths.folder_names_and_paths.get(name, ([], set()))
        folder_paths.folder_names_and_paths[name] = (paths if default in paths else [*paths, default],
                                                     set(known) | set(extensions))


def register_folders() -> None:
    """The pack's model folders: models/latent_directions (created, as direction files are saved there) and
    models/open_clip."""
    register_folder(DIRECTIONS_FOLDER, {".safetensors"})
    register_folder(OPEN_CLIP_FOLDER, set(WEIGHT_EXTENSIONS))
    os.makedirs(_directions_root(), exist_ok=True)


def _directions_root() -> str:
    return folder_paths.get_folder_paths(DIRECTIONS_FOLDER)[0]


def _condelta_folders() -> list[str]:
    if CONDELTA_FOLDER in folder_paths.folder_names_and_paths:
        return folder_paths.get_folder_paths(CONDELTA_FOLDER)
    return [os.path.join(os.path.dirname(_directions_root()), CONDELTA_FOLDER)]


def files_in(folders: list[str], extensions) -> list[str]:
    """Files with these extensions anywhere under the folders, as paths relative to their folder; read from disk
    each time (ComfyUI's file-list cache can miss a file added a moment ago)."""
    names = set()
    for folder in folders:
        if os.path.isdir(folder):
            for root, _, files in os.walk(folder, followlinks=True):
                names.update(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
                             for name in files if name.lower().endswith(tuple(extensions)))
    return sorted(names)


def file_in(folders: list[str], name: str) -> Path | None:
    """The file ``name`` (relative) in the first of the folders that has it; never a path outside them."""
    for folder in folders:
        root = Path(folder).resolve()
        path = (root / name).resolve()
        if root in path.parents and path.is_file():
            return path
    return None


def direction_files() -> list[str]:
    """Direction files, then ConDelta files as ``ConDelta/<name>``."""
    register_folders()
    return (files_in(folder_paths.get_folder_paths(DIRECTIONS_FOLDER), [".safetensors"])
            + [f"{CONDELTA_FOLDER}/{name}" for name in files_in(_condelta_folders(), [".safetensors"])])


def direction_path(name: str) -> Path:
    register_folders()
    if name.startswith(f"{CONDELTA_FOLDER}/"):
        found = file_in(_condelta_folders(), name[len(CONDELTA_FOLDER) + 1:])
    else:
        found = file_in(folder_paths.get_folder_paths(DIRECTIONS_FOLDER), name)
    if found is None:
        raise ValueError(f"file is '{name}', which is not in models/{DIRECTIONS_FOLDER} or models/{CONDELTA_FOLDER}; "
                         "expected one of the listed files (refresh the node list after adding files)")
    return found


def new_direction_path(filename_prefix: str) -> Path:
    return new_numbered_path(filename_prefix, ".safetensors")


LLM_FOLDER = "LLM"  # Hugging Face language models, one folder each (config.json, weights, tokenizer)
CONTROL_VECTOR_EXTENSION = ".gguf"  # llama.cpp control vectors, kept beside the direction files


def register_llm_folder() -> None:
    """models/LLM as a ComfyUI model folder (beside any paths a user gave it); calling it again changes nothing."""
    register_folder(LLM_FOLDER, set())


def folders_holding(folders: list[str], marker: str) -> list[str]:
    """Sub-folders (any depth) that hold a file named ``marker``, as paths relative to their folder; read from disk
    each time, like ``files_in``."""
    names = set()
    for folder in folders:
        if os.path.isdir(folder):
            for root, _, files in os.walk(folder, followlinks=True):
                if marker in files and os.path.abspath(root) != os.path.abspath(folder):
                    names.add(os.path.relpath(root, folder).replace(os.sep, "/"))
    return sorted(names)


def llm_folders() -> list[str]:
    """The model folders (any depth) under models/LLM that hold a config.json."""
    register_llm_folder()
    return folders_holding(folder_paths.get_folder_paths(LLM_FOLDER), "config.json")


def llm_folder(name: str) -> Path:
    """The folder ``name`` (relative) in the first models/LLM path that has it; never a folder outside them."""
    register_llm_folder()
    for folder in folder_paths.get_folder_paths(LLM_FOLDER):
        root = Path(folder).resolve()
        path = (root / name).resolve()
        if root in path.parents and path.is_dir():
            return path
    raise ValueError(f"model is '{name}', which is not a folder in models/{LLM_FOLDER}; expected one of the listed "
                     "models (refresh the node list after adding a model folder)")


def control_vector_files() -> list[str]:
    """llama.cpp control vectors (.gguf) anywhere under the directions folder."""
    register_folders()
    return files_in(folder_paths.get_folder_paths(DIRECTIONS_FOLDER), [CONTROL_VECTOR_EXTENSION])


def control_vector_path(name: str) -> Path:
    register_folders()
    found = file_in(folder_paths.get_folder_paths(DIRECTIONS_FOLDER), name)
    if found is None or not name.lower().endswith(CONTROL_VECTOR_EXTENSION):
        raise ValueError(f"file is '{name}', which is not a .gguf file in models/{DIRECTIONS_FOLDER}; expected one "
                         "of the listed files (refresh the node list after adding files)")
    return found


def new_numbered_path(filename_prefix: str, extension: str) -> Path:
    """``<prefix>_<counter><extension>`` in the directions folder, the counter one past the highest there (as
    ComfyUI's image savers number their files); a prefix may name a subfolder but not leave the folder."""
    register_folders()
    root = Path(_directions_root()).resolve()
    prefix = filename_prefix.strip()
    target = (root / prefix).resolve()
    if not prefix or root not in target.parents:
        raise ValueError(f"filename_prefix is '{filename_prefix}'; expected a file name inside models/"
                         f"{DIRECTIONS_FOLDER} (e.g. warm or styles/warm)")
    target.parent.mkdir(parents=True, exist_ok=True)
    taken = [int(path.stem[len(target.name) + 1:]) for path in target.parent.glob(f"{target.name}_*{extension}")
             if path.stem[len(target.name) + 1:].isdigit()]
    return target.parent / f"{target.name}_{max(taken, default=0) + 1:05d}{extension}"
