"""open_clip CLIPs read from local files: files written here load back exactly, files of another architecture and
unreadable files are refused with counts and names, and nothing ever reaches for the network."""

import re
import socket
import sys

import pytest
import torch

from latent_space_control.core.open_clip_loading import (architectures, read_open_clip, read_tokenizer,
                                                         trained_preprocessing)
from latent_space_control.reference import models, world

open_clip = pytest.importorskip("open_clip", reason="open_clip is a test extra: pip install -e '.[test]'")
safetensors_torch = pytest.importorskip("safetensors.torch")

REFERENCE_FOLDER = models.WEIGHTS / "clip"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)


@pytest.fixture(autouse=True)
def reference_architecture():
    models.register_clip_config()


@pytest.fixture
def network_attempts(monkeypatch):
    """Every attempt to open a connection, refused and recorded."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("the tests allow no network")

    for name in ("create_connection", "getaddrinfo"):
        monkeypatch.setattr(socket, name, refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def written_reference(path, seed=7):
    """The shipped reference CLIP's tensors, moved a little (so they are not the shipped ones), saved at ``path``."""
    generator = torch.Generator().manual_seed(seed)
    shipped = safetensors_torch.load_file(str(REFERENCE_FOLDER / "open_clip_model.safetensors"))
    state = {name: tensor + 0.01 * torch.randn(tensor.shape, generator=generator) for name, tensor in shipped.items()}
    if path.suffix == ".safetensors":
        safetensors_torch.save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)  # a training checkpoint: the tensors under "state_dict"
    return state


def other_architecture(path):
    clip = open_clip.CLIP(embed_dim=32, vision_cfg={"image_size": 32, "patch_size": 8, "width": 32, "layers": 1,
                                                    "head_width": 16},
                          text_cfg={"context_length": 16, "vocab_size": 50, "width": 32, "heads": 2, "layers": 1})
    safetensors_torch.save_file(clip.state_dict(), str(path))
    return clip.state_dict()


@pytest.mark.parametrize("name", ["tiny.safetensors", "tiny.pt"])
def test_a_written_file_loads_back_exactly(tmp_path, network_attempts, name):
    written = written_reference(tmp_path / name)
    with torch.inference_mode():  # as ComfyUI loads models
        clip = read_open_clip(models.CLIP_NAME, tmp_path / name, tokenizer_folder=REFERENCE_FOLDER)
        loaded = clip.model.state_dict()
        assert loaded.keys() == written.keys() and all(torch.equal(loaded[key], written[key]) for key in written)
        assert not clip.model.training and not any(p.requires_grad for p in clip.model.parameters())
        assert (clip.architecture, clip.weights) == (models.CLIP_NAME, str(tmp_path / name))
        assert tuple(clip.preprocess["size"]) == (32, 32) and tuple(clip.preprocess["mean"]) == OPENAI_MEAN
        text = clip.text_encoder()(["a red circle", "a blue square"])
        image = clip.image_scorer()(torch.rand(3, 3, 48, 48, generator=torch.Generator().manual_seed(1)))
    assert text.hidden_states.shape == (2, 16, 64) and text.embedding.shape == (2, 64) and image.shape == (3, 64)
    torch.testing.assert_close(image.norm(dim=1), torch.ones(3))
    assert network_attempts == []


def test_the_shipped_reference_reads_as_open_clip_reads_its_folder():
    clip = read_open_clip(models.CLIP_NAME, REFERENCE_FOLDER / "open_clip_model.safetensors", REFERENCE_FOLDER)
    engine, tokenizer = models.load_clip(REFERENCE_FOLDER)
    for key in ("size", "mean", "std"):
        assert list(clip.preprocess[key]) == list(engine.visual.preprocess_cfg[key])
    for key in ("interpolation", "resize_mode"):
        assert clip.preprocess[key] == engine.visual.preprocess_cfg[key]
    scene = world.Scene("circle", "red", "large", "center", "white")
    with torch.no_grad():
        image = clip.image_scorer()(world.render(scene)[None])
        text = clip.text_encoder()(["a red circle", "a blue square"]).embedding
        expected = engine.encode_text(tokenizer(["a red circle", "a blue square"]), normalize=True)
        torch.testing.assert_close(text, expected)
    similarity = (image @ text.T)[0]
    assert similarity[0] > similarity[1] + 0.3, similarity


def test_a_file_of_another_architecture_is_refused_with_counts(tmp_path):
    other = other_architecture(tmp_path / "other.safetensors")
    expected = open_clip.create_model(models.CLIP_NAME).state_dict()
    with pytest.raises(ValueError) as error:
        read_open_clip(models.CLIP_NAME, tmp_path / "other.safetensors", REFERENCE_FOLDER)
    message = str(error.value)
    assert message.startswith(f"weights: {tmp_path / 'other.safetensors'} does not fit architecture "
                              "'LSC-Reference-CLIP'")
    missing, total, unexpected, in_file, reshaped = map(int, re.search(
        r"(\d+) of the model's (\d+) tensors are missing from the file, (\d+) of the file's (\d+) tensors have no "
        r"place in the model and (\d+) have another shape", message).groups())
    assert (missing, total) == (len(expected.keys() - other.keys()), len(expected))
    assert (unexpected, in_file) == (len(other.keys() - expected.keys()), len(other))
    assert reshaped == sum(expected[key].shape != other[key].shape for key in expected.keys() & other.keys()) > 0


class NotATensor:
    pass


def test_unreadable_files_and_pickled_objects_are_refused(tmp_path):
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 64)
    torch.save({"state_dict": {"logit_scale": torch.ones(())}, "extra": NotATensor()}, tmp_path / "objects.pt")
    for name in ("broken.safetensors", "objects.pt"):
        with pytest.raises(ValueError, match=f"weights: .*{name} is not a readable open_clip checkpoint"):
            read_open_clip(models.CLIP_NAME, tmp_path / name, REFERENCE_FOLDER)
    (tmp_path / "model.gguf").write_bytes(b"\x00")
    with pytest.raises(ValueError, match="weights: model.gguf has the extension '.gguf'; expected one of .safetensors"):
        read_open_clip(models.CLIP_NAME, tmp_path / "model.gguf")


def test_names_without_a_file_fail_clearly_without_a_network_attempt(tmp_path, network_attempts):
    for weights in (tmp_path / "absent.safetensors", "openai", "laion2b_s34b_b79k"):
        with pytest.raises(ValueError, match=r"weights: .* is not a file; .* nothing is downloaded"):
            read_open_clip("ViT-B-32", weights)
    with pytest.raises(ValueError, match="architecture is 'ViT-Nope', which open_clip .* does not know"):
        read_open_clip("ViT-Nope", tmp_path / "absent.safetensors")
    with pytest.raises(ValueError, match="architecture 'roberta-ViT-B-32' builds its text tower from the Hugging Face"):
        read_open_clip("roberta-ViT-B-32", tmp_path / "absent.safetensors")
    (tmp_path / "open_clip_model.safetensors").write_bytes(b"\x00")  # never read: the tokenizer is missing first
    with pytest.raises(ValueError, match=f"uses the Hugging Face tokenizer 'timm/ViT-B-16-SigLIP'.*{tmp_path}"):
        read_open_clip("ViT-B-16-SigLIP", tmp_path / "open_clip_model.safetensors")
    assert network_attempts == []


def test_tokenizers_come_from_open_clip_or_from_the_weights_folder(tmp_path, network_attempts):
    bundled = read_tokenizer(open_clip, "ViT-B-32", open_clip.get_model_config("ViT-B-32")["text_cfg"], tmp_path)
    assert isinstance(bundled, open_clip.SimpleTokenizer) and bundled(["a red circle"]).shape == (1, 77)
    # SigLIP's settings (64 tokens) over tokenizer files in a folder: the reference's stand in for SigLIP's own.
    siglip = open_clip.get_model_config("ViT-B-16-SigLIP")["text_cfg"]
    from_folder = read_tokenizer(open_clip, "ViT-B-16-SigLIP", siglip, REFERENCE_FOLDER)
    assert from_folder(["a red circle"]).shape == (1, 64)
    assert network_attempts == []


def test_preprocessing_is_the_one_the_published_weights_were_trained_with():
    assert trained_preprocessing(open_clip, "ViT-B-16-SigLIP")["mean"] == (0.5, 0.5, 0.5)  # every SigLIP tag
    assert trained_preprocessing(open_clip, "ViT-L-14")["mean"] == OPENAI_MEAN  # 11 of its 12 tags
    assert trained_preprocessing(open_clip, models.CLIP_NAME) == {}  # no published weights: open_clip's defaults


def test_architectures_are_open_clips_own_without_hugging_face_text_towers():
    names = architectures()
    assert {"ViT-B-32", "ViT-L-14", "ViT-H-14", "ViT-bigG-14", "ViT-B-16-SigLIP", "RN50"} <= set(names)
    shipped = {name for name in open_clip.list_models() if name != models.CLIP_NAME}
    text_towers = {name for name in shipped if "hf_model_name" in open_clip.get_model_config(name)["text_cfg"]}
    assert "roberta-ViT-B-32" in text_towers and set(names) == shipped - text_towers and len(names) == len(set(names))


def test_without_open_clip_the_message_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # an import of open_clip now fails as if it were absent
    with pytest.raises(ImportError, match="'open_clip_torch' is needed for open_clip models .* -m pip install "
                                          "open_clip_torch"):
        read_open_clip("ViT-B-32", tmp_path / "absent.safetensors")
