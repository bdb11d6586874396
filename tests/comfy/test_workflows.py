"""Every shipped workflow, converted from its UI format and executed by ComfyUI on tiny models."""

import json
from pathlib import Path

import pytest
import torch

from ui_to_api import ui_to_api

WORKFLOWS = sorted((Path(__file__).resolve().parents[2] / "workflows").glob("*.json"))
# Real model loaders become the tiny test checkpoint; sizes and step counts shrink so a CPU runs them in seconds.
TINY = {"CheckpointLoaderSimple": "LSCTest_TinyCheckpoint"}
FAST = {"EmptyLatentImage": {"width": 64, "height": 64}, "ImageScale": {"width": 64, "height": 64},
        "BasicScheduler": {"steps": 2}, "KSampler": {"steps": 2}}


def write_input_images(comfy, workflow):
    from PIL import Image

    for node in workflow["nodes"]:
        if node["type"] == "LoadImage":
            gradient = torch.linspace(0, 255, 96).to(torch.uint8)
            pixels = torch.stack([gradient.expand(96, 96), gradient.expand(96, 96).T, gradient.flip(0).expand(96, 96)], -1)
            Image.frombytes("RGB", (96, 96), bytes(pixels.flatten().tolist())).save(comfy.input_dir / node["widgets_values"][0])


def test_workflows_are_shipped():
    assert {path.name for path in WORKFLOWS} >= {"lsc_morph_animation.json", "lsc_interpolate_images.json"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=[path.stem for path in WORKFLOWS])
def test_workflow_runs_in_comfyui(comfy, path):
    workflow = json.loads(path.read_text())
    types = {node["type"] for node in workflow["nodes"]}
    assert "Note" in types or "MarkdownNote" in types, "every workflow explains itself in a Note"
    assert any(t.startswith("LSC_") for t in types)
    write_input_images(comfy, workflow)
    prompt = ui_to_api(workflow, comfy.node_class, replace=TINY, overrides=FAST)
    result = comfy.run(prompt)
    assert result.ok, result.error
    saved = [image for output in result.outputs.values() for image in output.get("images", [])]
    assert saved, "the workflow saved or previewed no image"
    for image in saved:
        folder = comfy.output_dir if image["type"] == "output" else comfy.output_dir.parent / "temp"
        assert (folder / image["subfolder"] / image["filename"]).is_file()


def test_converter_refuses_widget_values_that_do_not_fit_the_node(comfy):
    workflow = json.loads(WORKFLOWS[0].read_text())
    node = next(n for n in workflow["nodes"] if n["type"].startswith("LSC_"))
    node["widgets_values"].append("surplus")
    with pytest.raises(ValueError, match="widget values but its inputs take"):
        ui_to_api(workflow, comfy.node_class)
