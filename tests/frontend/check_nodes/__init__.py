"""Helper nodes for the frontend check only (not part of the pack), loaded by ComfyUI beside the pack and
tests/comfy/lsc_test_nodes: bad inputs no core node can make on a tiny CPU setup.

FCheck_Conditioning: a CONDITIONING of any token width (e.g. to feed LSC_ConditioningInterpolate two conditionings
from "different text encoders"), optionally poisoned with NaN/Inf.
FCheck_PoisonLatent: a copy of a LATENT with one NaN or Inf value.
"""

import torch
from comfy_api.latest import ComfyExtension, io


def _poison(x: torch.Tensor, poison: str) -> torch.Tensor:
    x = x.clone()
    if poison != "none":
        x.view(-1)[0] = float("nan") if poison == "nan" else float("inf")
    return x


class Conditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="FCheck_Conditioning", category="frontend check",
                         inputs=[io.Int.Input("width", default=32, min=1, max=4096),
                                 io.Int.Input("tokens", default=77, min=1, max=1024),
                                 io.Int.Input("seed", default=0, min=0, max=2**31),
                                 io.Combo.Input("poison", options=["none", "nan", "inf"], default="none")],
                         outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, width, tokens, seed, poison):
        generator = torch.Generator().manual_seed(seed)
        cond = _poison(torch.randn(1, tokens, width, generator=generator), poison)
        pooled = torch.randn(1, width, generator=generator)
        return io.NodeOutput([[cond, {"pooled_output": pooled}]])


class PoisonLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="FCheck_PoisonLatent", category="frontend check",
                         inputs=[io.Latent.Input("latent"),
                                 io.Combo.Input("poison", options=["nan", "inf"], default="nan")],
                         outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, latent, poison):
        return io.NodeOutput({**latent, "samples": _poison(latent["samples"], poison)})


class Extension(ComfyExtension):
    async def get_node_list(self):
        return [Conditioning, PoisonLatent]


async def comfy_entrypoint():
    return Extension()
