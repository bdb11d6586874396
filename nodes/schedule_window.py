"""The part of the sampling schedule a patch acts in: ComfyUI's start/end percent convention, shared by every node
that patches sampling (style mixing, guidance, noise injection)."""

from __future__ import annotations

from comfy_api.latest import io


def window_inputs(what: str = "the patch", start: float = 0.0, why_start: str = "") -> list:
    """The two inputs; ``start`` is the start's default and ``why_start`` what to add to its tooltip."""
    return [
        io.Float.Input("start_percent", default=start, min=0.0, max=1.0, step=0.01,
                       tooltip=f"Where in the schedule {what} starts acting (0: the first, noisiest step"
                               f"{'; ' + why_start if why_start else ''})"),
        io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                       tooltip=f"Where in the schedule {what} stops acting (1: the last step)"),
    ]


def window_error(start_percent, end_percent) -> str | None:
    """The message for a window that ends before it starts (None when it is fine, or when either end is linked)."""
    if start_percent is None or end_percent is None or end_percent >= start_percent:
        return None
    return (f"end_percent ({end_percent}) is before start_percent ({start_percent}); expected "
            "start_percent ≤ end_percent")


def sigma_window(model_patcher, start_percent: float, end_percent: float) -> tuple[float, float]:
    """The noise levels between which a patch acts, (high, low): ComfyUI's own percent-of-schedule convention."""
    error = window_error(start_percent, end_percent)
    if error:
        raise ValueError(error)
    sampling = model_patcher.get_model_object("model_sampling")
    return float(sampling.percent_to_sigma(start_percent)), float(sampling.percent_to_sigma(end_percent))


def active(extra_options: dict, window: tuple[float, float]) -> bool:
    """Whether the current noise level (the patch's ``extra_options`` / ``transformer_options``) lies in the window."""
    start, end = window
    sigma = float(extra_options["sigmas"].max())
    return end <= sigma <= start
