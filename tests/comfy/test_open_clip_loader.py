"""Open CLIP Loader (LSC), executed by ComfyUI's own validator and executor: the built-in reference CLIP tells a red
circle from a blue square, a file written to the open_clip model folder loads bit for bit, the model is under ComfyUI's
model management, and bad choices stop with messages that say which input to change."""

import importlib
import sys

import pytest
import torch

from latent_space_control.reference import models, world

open_clip = pytest.importorskip("open_clip", reason="the loader needs open_clip_torch (requirements.txt)")
safetensors_torch = pytest.importorskip("safetensors.torch")

NODE_ID = "LSC_OpenCLIPLoader"
REFERENCE_WEIGHTS = "reference (shipped with the pack)"


@pytest.fixture(scope="module")
def loader(comfy, reference_loader):
    """The loader's module as ComfyUI loaded the pack. Until nodes/extension.py lists the node, it is imported from
    the same package as the Reference Model Loader and registered for these tests."""
    if NODE_ID not in comfy.node_mappings:
        module = importlib.import_module(f"{reference_loader.__package__}.open_clip")
        comfy.node_mappings[NODE_ID] = module.OpenCLIPLoader
    return sys.modules[comfy.node_class(NODE_ID).__module__]


@pytest.fixture(scope="module")
def model_folder(loader, tmp_path_factory):
    """A folder of the open_clip model folder (as a user's extra_model_paths.yaml adds one)."""
    folder = tmp_path_factory.mktemp("open_clip")
    loader.folder_paths.add_model_folder_path("open_clip", str(folder))
    return folder


def load_prompt(architecture=models.CLIP_NAME, weights=REFERENCE_WEIGHTS):
    return {"clip": {"class_type": NODE_ID, "inputs": {"architecture": architecture, "weights": weights}},
            "out": {"class_type": "LSCTest_Capture", "inputs": {"value": ["clip", 0], "label": "clip"}}}


def shipped_state():
    return safetensors_torch.load_file(str(models.WEIGHTS / "clip" / "open_clip_model.safetensors"))


def red_circle(size=32):
    picture = world.render(world.Scene("circle", "red", "large", "center", "white"))[None]
    return torch.nn.functional.interpolate(picture, size=(size, size), mode="nearest") if size != 32 else picture


def test_the_reference_choice_loads_under_inference_mode_and_scores(comfy, loader):
    result = comfy.run(load_prompt())
    assert result.ok, result.error
    clip = result.captured["clip"]
    assert result.captured["clip:inference_mode"]
    assert not clip.model.training and all(p.is_inference() and not p.requires_grad for p in clip.model.parameters())
    assert tuple(clip.preprocess["size"]) == (32, 32)
    with torch.inference_mode():
        text = clip.text_encoder()(["a red circle", "a blue square"])
        assert text.hidden_states.shape == (2, 16, 64) and text.embedding.shape == (2, 64)
        for size in (32, 96):  # any picture size: resized as the model's preprocessing does
            image = clip.image_scorer()(red_circle(size))
            similarity = (image @ text.embedding.T)[0]
            assert similarity[0] > similarity[1] + 0.3, similarity
        engine, tokenizer = models.load_clip(models.WEIGHTS / "clip")  # the same CLIP as open_clip loads its folder
        mean, std = (torch.tensor(engine.visual.preprocess_cfg[key])[:, None, None] for key in ("mean", "std"))
        expected = engine.encode_image((red_circle() - mean) / std, normalize=True)
        torch.testing.assert_close(clip.image_scorer()(red_circle()), expected)
        torch.testing.assert_close(text.embedding, engine.encode_text(tokenizer(["a red circle", "a blue square"]),
                                                                      normalize=True))


def test_the_model_is_under_comfyuis_model_management(comfy, loader):
    from comfy import model_management as mm, model_patcher

    result = comfy.run(load_prompt())
    assert result.ok, result.error
    clip = result.captured["clip"]
    assert isinstance(clip.patcher, model_patcher.ModelPatcher) and clip.patcher.model is clip.model
    assert clip.patcher.load_device == mm.text_encoder_device()
    assert clip.patcher.offload_device == mm.text_encoder_offload_device()
    with torch.inference_mode():
        assert clip.load() == clip.patcher.load_device
    assert any(loaded.model is clip.patcher for loaded in mm.current_loaded_models)
    assert next(clip.model.parameters()).device == torch.device(clip.patcher.load_device)


def test_a_file_written_to_the_model_folder_loads_bit_for_bit(comfy, loader, model_folder):
    generator = torch.Generator().manual_seed(7)
    written = {name: tensor + 0.01 * torch.randn(tensor.shape, generator=generator)
               for name, tensor in shipped_state().items()}
    safetensors_torch.save_file(written, str(model_folder / "tiny-reference.safetensors"))
    (model_folder / "notes.txt").write_text("not a model")
    options = loader.OpenCLIPLoader.GET_SCHEMA().inputs[1].options
    assert "tiny-reference.safetensors" in options and "notes.txt" not in options and options[0] == REFERENCE_WEIGHTS

    result = comfy.run(load_prompt(weights="tiny-reference.safetensors"))
    assert result.ok, result.error
    clip = result.captured["clip"]
    loaded = clip.model.state_dict()
    assert loaded.keys() == written.keys() and all(torch.equal(loaded[key], written[key]) for key in written)
    with torch.inference_mode():
        assert clip.text_encoder()(["a red circle"]).embedding.shape == (1, 64)  # the shipped tokenizer


def test_bad_inputs_fail_with_messages_naming_the_input(comfy, loader, model_folder):
    result = comfy.run(load_prompt(architecture="ViT-B-32"))
    assert not result.ok
    assert "weights is 'reference (shipped with the pack)'" in result.error
    assert "architecture is 'ViT-B-32'" in result.error

    other = open_clip.CLIP(embed_dim=32, vision_cfg={"image_size": 32, "patch_size": 8, "width": 32, "layers": 1,
                                                     "head_width": 16},
                           text_cfg={"context_length": 16, "vocab_size": 50, "width": 32, "heads": 2, "layers": 1})
    safetensors_torch.save_file(other.state_dict(), str(model_folder / "other-architecture.safetensors"))
    result = comfy.run(load_prompt(weights="other-architecture.safetensors"))
    assert not result.ok
    assert "other-architecture.safetensors does not fit architecture 'LSC-Reference-CLIP'" in result.error
    assert "tensors are missing from the file" in result.error and "have another shape" in result.error

    (model_folder / "broken.safetensors").write_bytes(b"\x00" * 64)
    result = comfy.run(load_prompt(weights="broken.safetensors"))
    assert not result.ok and "is not a readable open_clip checkpoint" in result.error

    # Upstream 0.3.64 does not check V3 combo choices (the fork does): either ComfyUI or the node refuses them.
    for prompt, named in ((load_prompt(architecture="ViT-Nope", weights="other-architecture.safetensors"), "ViT-Nope"),
                          (load_prompt(weights="missing.safetensors"), "missing.safetensors")):
        result = comfy.run(prompt)
        assert not result.ok and named in result.error


def test_the_open_clip_folder_is_registered_once(loader):
    import os

    folder_paths = loader.folder_paths
    before = folder_paths.get_folder_paths("open_clip")
    loader.register_folders()
    paths = folder_paths.get_folder_paths("open_clip")
    assert paths == before and len(set(map(str, paths))) == len(paths)
    assert os.path.join(folder_paths.models_dir, "open_clip") in map(str, paths)
