"""The pack's model folders in ComfyUI: where direction files are saved and loaded (and ConDelta's, to read)."""

from __future__ import annotations

import os
from pathlib import Path

try:
    import folder_paths
except ImportError:  # the pip-installable fork keeps it inside its package
    from comfy.cmd import folder_paths

DIRECTIONS_FOLDER = "latent_directions"
CONDELTA_FOLDER = "ConDelta"  # ComfyUI-ConDelta's folder: its files load as directions too
EXTENSIONS = {".safetensors"}


def register_folders() -> None:
    """models/latent_directions (created when missing); idempotent, so a reload adds nothing twice."""
    if DIRECTIONS_FOLDER not in folder_paths.folder_names_and_paths:
        try:  # the fork: under its own models folder
            folder_paths.add_model_folder_path(DIRECTIONS_FOLDER, extensions=EXTENSIONS)
        except TypeError:  # upstream's add_model_folder_path takes no extensions
            folder_paths.folder_names_and_paths[DIRECTIONS_FOLDER] = (
                [os.path.join(folder_paths.models_dir, DIRECTIONS_FOLDER)], set(EXTENSIONS))
    os.makedirs(_directions_root(), exist_ok=True)


def _directions_root() -> str:
    return folder_paths.get_folder_paths(DIRECTIONS_FOLDER)[0]


def _condelta_folders() -> list[str]:
    if CONDELTA_FOLDER in folder_paths.folder_names_and_paths:
        return folder_paths.get_folder_paths(CONDELTA_FOLDER)
    return [os.path.join(os.path.dirname(_directions_root()), CONDELTA_FOLDER)]


def _safetensors_in(folders: list[str]) -> list[str]:
    names = set()
    for folder in folders:
        if os.path.isdir(folder):
            for root, _, files in os.walk(folder, followlinks=True):
                names.update(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
                             for name in files if name.endswith(".safetensors"))
    return sorted(names)


def direction_files() -> list[str]:
    """Direction files, then ConDelta files as ``ConDelta/<name>``."""
    register_folders()
    return (folder_paths.get_filename_list(DIRECTIONS_FOLDER)
            + [f"{CONDELTA_FOLDER}/{name}" for name in _safetensors_in(_condelta_folders())])


def direction_path(name: str) -> Path:
    register_folders()
    if name.startswith(f"{CONDELTA_FOLDER}/"):
        for folder in _condelta_folders():
            path = Path(folder) / name[len(CONDELTA_FOLDER) + 1:]
            if path.is_file():
                return path
    else:
        found = folder_paths.get_full_path(DIRECTIONS_FOLDER, name)
        if found is not None:
            return Path(found)
    raise ValueError(f"file is '{name}', which is not in models/{DIRECTIONS_FOLDER} or models/{CONDELTA_FOLDER}; "
                     "expected one of the listed files (refresh the node list after adding files)")


def new_direction_path(filename_prefix: str) -> Path:
    """``<prefix>_<counter>.safetensors`` in the directions folder, the counter one past the highest there (as
    ComfyUI's image savers number their files); a prefix may name a subfolder but not leave the folder."""
    register_folders()
    root = Path(_directions_root()).resolve()
    prefix = filename_prefix.strip()
    target = (root / prefix).resolve()
    if not prefix or root not in target.parents:
        raise ValueError(f"filename_prefix is '{filename_prefix}'; expected a file name inside models/"
                         f"{DIRECTIONS_FOLDER} (e.g. warm or styles/warm)")
    target.parent.mkdir(parents=True, exist_ok=True)
    taken = [int(path.stem[len(target.name) + 1:]) for path in target.parent.glob(f"{target.name}_*.safetensors")
             if path.stem[len(target.name) + 1:].isdigit()]
    return target.parent / f"{target.name}_{max(taken, default=0) + 1:05d}.safetensors"
