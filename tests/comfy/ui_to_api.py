"""UI-format workflow JSON (what the editor saves) to an API prompt (what the executor runs).

ComfyUI's backend has no such converter (the frontend does it), so the tests do it from the node classes' own input
definitions: widget values are positional over the widget inputs (required, then optional), with an extra UI-only
value after every widget that has a control_after_generate menu and after an image-upload widget.
"""

from __future__ import annotations

from typing import Callable

FRONTEND_ONLY = {"Note", "MarkdownNote"}
# The switch that runs a workflow made for a real checkpoint on the pack's reference family: its loader instead of the
# checkpoint's, and sizes in its pictures (32×32; its VAE downscales by 4, so Empty Latent Image asks for 64×64).
REFERENCE_REPLACE = {"CheckpointLoaderSimple": "LSC_ReferenceModelLoader"}
REFERENCE_OVERRIDES = {"EmptyLatentImage": {"width": 64, "height": 64}, "ImageScale": {"width": 32, "height": 32}}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize", True, False}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _widget_inputs(node_class) -> list[tuple[str, dict]]:
    definition = node_class.INPUT_TYPES()
    widgets = []
    for section in ("required", "optional"):
        for name, spec in definition.get(section, {}).items():
            kind, options = spec[0], (spec[1] if len(spec) > 1 else {}) or {}
            if (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput"):
                widgets.append((name, options))
    return widgets


def _source(links: dict, nodes: dict, link_id: int) -> list:
    """[node id, output slot] feeding a link, looking through Reroute nodes."""
    _, from_node, from_slot, *_ = links[link_id]
    node = nodes[from_node]
    if node["type"] == "Reroute":
        return _source(links, nodes, node["inputs"][0]["link"])
    return [str(from_node), from_slot]


def ui_to_api(workflow: dict, node_class: Callable[[str], type], replace: dict | None = None,
              overrides: dict | None = None, reference: bool = False) -> dict:
    """The API prompt for ``workflow``. ``replace`` swaps class types (e.g. a checkpoint loader for a tiny test
    model with the same outputs; the new node keeps only the inputs it declares); ``overrides`` sets widget values
    by class type ({"KSampler": {"steps": 2}}); ``reference`` runs the workflow on the reference family
    (``REFERENCE_REPLACE`` and ``REFERENCE_OVERRIDES`` under the caller's own)."""
    replace, overrides = replace or {}, overrides or {}
    if reference:
        replace = {**REFERENCE_REPLACE, **replace}
        overrides = {**REFERENCE_OVERRIDES, **overrides}
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node_id, node in nodes.items():
        if node["type"] in FRONTEND_ONLY or node["type"] == "Reroute" or node.get("mode", 0) == 2:
            continue
        if node.get("mode", 0) == 4:
            raise ValueError(f"node {node_id} ({node['type']}) is bypassed; the converter does not bypass nodes")
        linked = {slot["name"]: slot["link"] for slot in node.get("inputs", []) if slot.get("link") is not None}
        inputs = {name: _source(links, nodes, link) for name, link in linked.items()}
        values = list(node.get("widgets_values") or [])
        position = 0
        for name, options in _widget_inputs(node_class(node["type"])):
            if position >= len(values):
                break
            value = values[position]
            position += 1
            has_control = options.get("control_after_generate") or name in ("seed", "noise_seed")
            if has_control and position < len(values) and values[position] in CONTROL_VALUES:
                position += 1
            if options.get("image_upload") and position < len(values) and values[position] == "image":
                position += 1
            if name not in linked:
                inputs[name] = value
        if position != len(values):
            raise ValueError(f"node {node_id} ({node['type']}) has {len(values)} widget values but its inputs take "
                             f"{position}: the workflow does not match this version of the node")
        inputs.update(overrides.get(node["type"], {}))
        class_type = replace.get(node["type"], node["type"])
        if class_type != node["type"]:
            declared = {name for section in node_class(class_type).INPUT_TYPES().values() for name in section}
            inputs = {name: value for name, value in inputs.items() if name in declared}
        prompt[str(node_id)] = {"class_type": class_type, "inputs": inputs}
    return prompt
