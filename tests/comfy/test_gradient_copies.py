"""The private, differentiable copies behind the gradient nodes (comfyui-contract.md §3.5): made once per source
model and weight patches, with ordinary tensors, and freed with the source."""

import gc
import sys
import weakref

import torch


def _gradients(comfy):
    """nodes/gradients.py as ComfyUI loaded the pack."""
    package = comfy.node_class("LSC_LatentOptimize").__module__.rsplit(".", 1)[0]
    return sys.modules[f"{package}.gradients"]


def _tiny_model():
    import lsc_test_nodes

    with torch.inference_mode():  # as a loader node builds it
        return lsc_test_nodes.tiny_model()


def test_the_copy_is_made_once_per_patches_and_freed_with_its_source(comfy):
    gradients = _gradients(comfy)
    model = _tiny_model()
    copy, _ = gradients.differentiable_diffusion_model(model)
    assert gradients.differentiable_diffusion_model(model)[0] is copy  # cached, not copied per run
    assert not any(parameter.is_inference() for parameter in copy.parameters())
    assert all(parameter.is_inference() for parameter in model.model.parameters())  # the source is untouched
    patched = model.clone()
    key = next(iter(patched.model_state_dict()))
    patched.add_patches({key: (torch.zeros_like(patched.model_state_dict()[key]),)}, 1.0)
    patched_copy, _ = gradients.differentiable_diffusion_model(patched)
    assert patched_copy is not copy  # other weight patches: another copy
    source_ref, copy_ref = weakref.ref(model.model), weakref.ref(patched_copy)
    del model, patched, copy, patched_copy
    gc.collect()
    assert source_ref() is None, "the cached copy keeps its source alive"
    assert copy_ref() is None, "the copy outlives its source"


def test_gradients_flow_through_the_copy_to_the_input_only(comfy):
    import lsc_test_nodes

    gradients = _gradients(comfy)
    model = _tiny_model()
    copy, device = gradients.differentiable_diffusion_model(model)
    with torch.inference_mode(False), torch.enable_grad():
        x = torch.randn(1, 4, 8, 8, device=device, requires_grad=True)
        context = torch.randn(1, 4, lsc_test_nodes.TEXT_WIDTH, device=device)
        out = copy.apply_model(x, torch.tensor([1.0], device=device), c_crossattn=context)
        grad, = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in copy.parameters())
