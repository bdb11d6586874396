"""Semantic Guidance (SEGA): steer sampling towards or away from a concept prompt, with the concept's prediction made
in the sampler's own batched model call beside the prompt's and the negative's.

How it sits in ComfyUI's sampling (U and F alike), all on the model's clone:
- an OUTER_SAMPLE wrapper (around ``CFGGuider.outer_sample``; ``executor.class_obj`` is the guider) adds each concept's
  conditioning to the guider's conds under its own key before sampling, so ComfyUI prepares it as it prepares the
  positive (areas, masks, model conds), keeps the run's state in the run's model options, and takes both away after;
- a PREDICT_NOISE wrapper marks the start of each model evaluation, and a CALC_COND_BATCH wrapper adds the concepts
  to that evaluation's first ``calc_cond_batch`` (positive, negative and concepts in one batch), hands ComfyUI its own
  outputs and keeps the concepts' (later calls in the same step, another patch's, are left alone);
- a post-CFG function applies the step to the CFG result (it needs the negative's prediction even at cfg 1).
A second Semantic Guidance node on a patched model replaces the first's OUTER_SAMPLE patch with one that holds both
concepts: still one batched evaluation per step.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..core.semantic_guidance import Concept, semantic_guidance_step
from .common import CATEGORY
from .schedule_window import sigma_window, window_error, window_inputs

FAMILY = f"{CATEGORY}/guidance"
KEY = "lsc_semantic_guidance"
DIRECTIONS = {"add": 1, "remove": -1}
# Sweep on the reference family (benchmarks/_sega_bench.py --sweep: 96 blue-square captions apart from the evaluation
# set, concept "red" added, euler karras 20 steps, cfg 4; share turned red / share keeping shape, size, position and
# background, 1.00 unguided): start_percent 0, 0.2, 0.3, 0.4, 0.5 x scale 5, 7.5, 10, 15 x threshold 0.5, 0.8, 0.9,
# momentum off. Scale 5 turns at most 0.58 red; 15 keeps at most 0.77; at 10, thresholds 0.8 and 0.9 keep less
# than 0.5 at every start. At scale 10, threshold 0.5 the keep rate was 0.78 (start 0), 0.82 (0.2), 0.86 (0.3),
# 0.85 (0.4) and 0.93 at start 0.5, all turned red: the defaults. The reference family settles its layout by about
# half the schedule (DEFAULT_CUTOFF in nodes/style.py), so a concept starting there changes the colour, not the layout.
# At start 0.5 and scale 10, lower thresholds kept more: 0.25 kept 0.94 and 0 (no mask) 0.95 on the sweep set; on the
# 128 evaluation captions threshold 0.5 kept 0.81, 0.25 kept 0.88 and 0 kept 0.875, all turned red. 0.25: the mask
# still leaves the quarter of each channel the concept moves least alone.
DEFAULT_SCALE = 10.0
DEFAULT_THRESHOLD = 0.25
DEFAULT_START_PERCENT = 0.5
DEFAULT_MOMENTUM_SCALE = 0.0
DEFAULT_MOMENTUM_BETA = 0.6


class SemanticGuidanceRun:
    """One sampling run's state: the guider, its concept cond keys, the concepts, their momenta, and the concepts'
    predictions for the current evaluation."""

    def __init__(self, guider, keys: list[str], concepts: list[Concept]):
        self.guider = guider
        self.keys = keys
        self.concepts = concepts
        self.momenta = (None,) * len(concepts)
        self.awaiting_batch = False
        self.predictions = None


class SemanticGuidancePatch:
    """The OUTER_SAMPLE wrapper: the concepts (each a core Concept and its CONDITIONING) a run guides with."""

    def __init__(self, concepts: tuple[tuple[Concept, list], ...]):
        self.concepts = concepts

    def __call__(self, executor, *args, **kwargs):
        import comfy.sampler_helpers

        guider = executor.class_obj
        keys = [f"{KEY}_{index}" for index in range(len(self.concepts))]
        positive = guider.conds.get("positive") or []
        for index, (key, (_, conditioning)) in enumerate(zip(keys, self.concepts)):
            converted = comfy.sampler_helpers.convert_cond(conditioning)
            require_same_width(converted, positive, index)
            guider.conds[key] = converted
        options = guider.model_options.setdefault("transformer_options", {})
        options[KEY] = SemanticGuidanceRun(guider, keys, [concept for concept, _ in self.concepts])
        try:
            return executor(*args, **kwargs)
        finally:
            options.pop(KEY, None)
            for key in keys:
                guider.conds.pop(key, None)


def require_same_width(concept: list[dict], positive: list[dict], index: int) -> None:
    widths = {entry["cross_attn"].shape[-1] for entry in positive if "cross_attn" in entry}
    for entry in concept:
        if "cross_attn" in entry and widths and entry["cross_attn"].shape[-1] not in widths:
            raise ValueError(f"concept (Semantic Guidance concept {index + 1}) holds "
                             f"{entry['cross_attn'].shape[-1]}-wide tokens but the positive prompt "
                             f"{sorted(widths)[0]}-wide ones; expected a concept encoded with the same CLIP as the "
                             "prompt")


def run_of(model_options: dict) -> SemanticGuidanceRun | None:
    return model_options.get("transformer_options", {}).get(KEY)


def mark_evaluation(executor, x, timestep, model_options, seed):
    """PREDICT_NOISE wrapper: the next calc_cond_batch of this evaluation carries the concepts, if a concept needs
    them at this noise level."""
    run = run_of(model_options)
    if run is None:
        return executor(x, timestep, model_options, seed)
    level = float(timestep.max())
    run.awaiting_batch = any(concept.needs_prediction(level) for concept in run.concepts)
    run.predictions = None
    try:
        return executor(x, timestep, model_options, seed)
    finally:
        run.awaiting_batch = False
        run.predictions = None


def batch_concepts(executor, model, conds, x_in, timestep, model_options):
    """CALC_COND_BATCH wrapper: the concepts ride in the evaluation's first batch; ComfyUI gets its own outputs."""
    run = run_of(model_options)
    if run is None or not run.awaiting_batch:
        return executor(model, conds, x_in, timestep, model_options)
    run.awaiting_batch = False
    out = executor(model, [*conds, *(run.guider.conds[key] for key in run.keys)], x_in, timestep, model_options)
    run.predictions = out[len(conds):]
    return out[:len(conds)]


def apply_semantic_guidance(args: dict):
    """Post-CFG function: the step on the CFG result, from the negative's and the concepts' predictions."""
    run = run_of(args["model_options"])
    if run is None:
        return args["denoised"]
    if run.awaiting_batch:
        raise ValueError("Semantic Guidance found no model call to add its concepts to: another patch evaluates the "
                         "model in its own way (context windows, a custom calc_cond_batch function); expected "
                         "ComfyUI's batched evaluation")
    if run.predictions is None:
        return args["denoised"]
    if args["uncond"] is None:
        raise ValueError("Semantic Guidance needs the negative prompt's prediction and this sampler has none; "
                         "expected a guider with a negative (KSampler, CFGGuider), not BasicGuider")
    guided, run.momenta = semantic_guidance_step(args["denoised"], args["uncond_denoised"], run.predictions,
                                                 args["sigma"], run.concepts, run.momenta)
    run.predictions = None
    return guided


def with_concept(model, concept: Concept, conditioning: list):
    """A clone of ``model`` that also guides with ``concept``: added to the concepts of a Semantic Guidance patch
    already on the model, or patched on afresh."""
    from comfy.patcher_extension import WrappersMP

    patched = model.clone()
    existing = model.get_wrappers(WrappersMP.OUTER_SAMPLE, KEY)
    earlier = existing[0].concepts if existing else ()
    patched.remove_wrappers_with_key(WrappersMP.OUTER_SAMPLE, KEY)
    patched.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, KEY, SemanticGuidancePatch((*earlier, (concept,
                                                                                                  conditioning))))
    if not existing:
        patched.add_wrapper_with_key(WrappersMP.PREDICT_NOISE, KEY, mark_evaluation)
        patched.add_wrapper_with_key(WrappersMP.CALC_COND_BATCH, KEY, batch_concepts)
        patched.set_model_sampler_post_cfg_function(apply_semantic_guidance, disable_cfg1_optimization=True)
    return patched


class SemanticGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_SemanticGuidance",
            display_name="Semantic Guidance (LSC)",
            category=FAMILY,
            description="SEGA: add a concept to the picture or remove it, given as its own prompt, changing only "
                        "the parts of the latent where the concept's prediction differs most. The concept is "
                        "predicted in the same batched model call as the prompt and the negative; chain several "
                        "of these nodes for several concepts (still one call per step). Works with every sampler "
                        "and model family.",
            inputs=[
                io.Model.Input("model", tooltip="The model to guide (a patched copy is returned)"),
                io.Conditioning.Input("concept", tooltip="The concept to add or remove, encoded with the same CLIP "
                                                         "as the prompt (e.g. 'red', 'glasses', 'snow')"),
                io.Combo.Input("direction", options=list(DIRECTIONS), default="add",
                               tooltip="add: steer towards the concept; remove: steer away from it"),
                io.Float.Input("scale", default=DEFAULT_SCALE, min=0.0, max=50.0, step=0.1,
                               tooltip="How strongly the concept steers (0: no effect; SEGA's papers use 3-10)"),
                io.Float.Input("threshold", default=DEFAULT_THRESHOLD, min=0.0, max=0.99, step=0.01,
                               tooltip="Which share of each latent channel the concept may change: only elements "
                                       "whose concept difference reaches this quantile (0: all of them; 0.9: the "
                                       "strongest 10%, leaving the rest of the picture alone)"),
                *window_inputs("the concept", DEFAULT_START_PERCENT,
                               "later starts leave the layout as the prompt draws it and change colour and detail"),
                io.Float.Input("momentum_scale", default=DEFAULT_MOMENTUM_SCALE, min=0.0, max=5.0, step=0.05,
                               tooltip="How much the concept's steering of earlier steps adds to each step "
                                       "(0: none); it accumulates before start_percent too, a warm start"),
                io.Float.Input("momentum_beta", default=DEFAULT_MOMENTUM_BETA, min=0.0, max=0.99, step=0.01,
                               tooltip="How long the momentum remembers earlier steps (0: only the last one)"),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip="The model with the concept's guidance")],
        )

    @classmethod
    def validate_inputs(cls, start_percent, end_percent):
        return window_error(start_percent, end_percent) or True

    @classmethod
    def execute(cls, model, concept, direction, scale, threshold, start_percent, end_percent, momentum_scale,
                momentum_beta) -> io.NodeOutput:
        if not concept:
            raise ValueError("concept is an empty conditioning; expected at least one entry")
        if scale == 0:
            return io.NodeOutput(model.clone())
        start, end = sigma_window(model, start_percent, end_percent)
        settings = Concept(scale=scale, threshold=threshold, sign=DIRECTIONS[direction],
                           momentum_scale=momentum_scale, momentum_beta=momentum_beta, start_sigma=start,
                           end_sigma=end)
        return io.NodeOutput(with_concept(model, settings, concept))


NODES = [SemanticGuidance]
