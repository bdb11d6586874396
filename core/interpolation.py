"""Interpolation between tensors: lerp, slerp, nlerp and variance-preserving paths, easing, keyframed paths, seed travel.

Every method is a per-vector combination ``out = c_a * a + c_b * b``; a *vector* is everything from ``start_dim`` on
(``start_dim=1``: one vector per latent sample; ``start_dim=-1``: one vector per token of a conditioning). Only the
scalar coefficients differ between methods: slerp and nlerp read each vector's norm and angle in one reduction sweep,
then every method is a single multiply-add over the tensors.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from .checks import require_batch, require_compatible, require_finite
from .masks import blend_masked
from .tokens import common_length, tile_tokens

METHODS = ("slerp", "lerp", "nlerp", "variance_preserving")

EASINGS: dict[str, Callable[[float], float]] = {
    "linear": lambda u: u,
    "ease_in": lambda u: u * u,
    "ease_out": lambda u: 1.0 - (1.0 - u) ** 2,
    "ease_in_out": lambda u: 2.0 * u * u if u < 0.5 else 1.0 - 2.0 * (1.0 - u) ** 2,
    "cosine": lambda u: 0.5 - 0.5 * math.cos(math.pi * u),
    "cubic": lambda u: 4.0 * u ** 3 if u < 0.5 else 1.0 - 4.0 * (1.0 - u) ** 3,
}

# Below this sin(angle) the great circle is numerically undefined: parallel vectors take the nlerp limit, antiparallel
# ones turn through a fixed orthogonal direction. Float32 dot products resolve the angle to about 1e-3 near 0 and pi.
_DEGENERATE_SIN = 5e-3
# From this length on, a vector's norms and dot product are taken by BLAS row by row on the CPU.
_LONG_ROW = 1 << 14


def ease(u: float, easing: str) -> float:
    if easing not in EASINGS:
        raise ValueError(f"easing is '{easing}'; expected one of {', '.join(EASINGS)}")
    return EASINGS[easing](min(max(float(u), 0.0), 1.0))


def path_positions(frames: int, t_start: float, t_end: float, easing: str = "linear") -> list[float]:
    """``frames`` positions from ``t_start`` to ``t_end`` (both included), spaced by the easing curve."""
    if frames < 1:
        raise ValueError(f"frames is {frames}; expected at least 1")
    if frames == 1:
        return [float(t_start)]
    return [t_start + (t_end - t_start) * ease(i / (frames - 1), easing) for i in range(frames)]


def _coefficients(method: str, t: float, ra: float, rb: float, cos: float) -> tuple[float, float, float]:
    """Coefficients (c_a, c_b, c_orth) of ``a``, ``b`` and a unit vector orthogonal to ``a`` for one vector pair with
    norms ``ra``, ``rb`` and cosine ``cos``; slerp and nlerp keep the norm on the straight line between ra and rb."""
    if method == "lerp":
        return 1.0 - t, t, 0.0
    if method == "variance_preserving":
        return math.cos(t * math.pi / 2), math.sin(t * math.pi / 2), 0.0
    radius = max((1.0 - t) * ra + t * rb, 0.0)
    if ra == 0.0 or rb == 0.0:  # a zero endpoint has no direction: travel along the other one's
        return (radius / ra if ra > 0 else 0.0), (radius / rb if rb > 0 else 0.0), 0.0
    sin = math.sqrt(max(1.0 - cos * cos, 0.0))
    if sin <= _DEGENERATE_SIN and cos < 0:  # antiparallel: turn through a fixed orthogonal direction
        return radius * math.cos(math.pi * t) / ra, 0.0, radius * math.sin(math.pi * t)
    if method == "slerp" and sin > _DEGENERATE_SIN:
        theta = math.atan2(sin, cos)
        sa, sb = math.sin((1.0 - t) * theta) / sin, math.sin(t * theta) / sin
    else:  # nlerp, and slerp's limit for (nearly) parallel vectors
        sa, sb = 1.0 - t, t
    # Normalise the unit-vector combination analytically: its norm follows from the scalars, no extra tensor pass.
    direction_norm = math.sqrt(max(sa * sa + sb * sb + 2.0 * sa * sb * cos, 0.0))
    scale = radius / direction_norm if direction_norm > 0 else 0.0
    return scale * sa / ra, scale * sb / rb, 0.0


def _orthogonal_unit(a_rows: torch.Tensor) -> torch.Tensor:
    """A deterministic unit vector orthogonal to each row: a fixed Gaussian direction, Gram-Schmidt against the row."""
    generator = torch.Generator(device="cpu").manual_seed(0x15C)
    g = torch.randn(a_rows.shape[-1], generator=generator, dtype=torch.float64).to(a_rows.device)
    u = a_rows.double() / a_rows.double().norm(dim=-1, keepdim=True)
    p = g.expand_as(u) - (u @ g).unsqueeze(-1) * u
    return (p / p.norm(dim=-1, keepdim=True)).to(a_rows.dtype)


def _row_geometry(a: torch.Tensor, b: torch.Tensor) -> list[tuple[float, float, float]]:
    """(norm of a, norm of b, cosine between them) for each row of a, b: [N, D]."""
    if a.device.type == "cpu" and a.shape[1] >= _LONG_ROW:
        # A few long vectors (latent samples): BLAS dot products row by row, no temporary the size of the input.
        squares = torch.stack([torch.stack([torch.dot(x, x), torch.dot(y, y), torch.dot(x, y)]) for x, y in zip(a, b)])
    else:
        squares = torch.stack([torch.linalg.vecdot(a, a), torch.linalg.vecdot(b, b), torch.linalg.vecdot(a, b)], dim=1)
    geometry = []
    for xx, yy, xy in squares.double().tolist():
        ra, rb = math.sqrt(max(xx, 0.0)), math.sqrt(max(yy, 0.0))
        cos = xy / (ra * rb) if ra > 0 and rb > 0 else 1.0
        geometry.append((ra, rb, min(max(cos, -1.0), 1.0)))
    return geometry


def _combine(a: torch.Tensor, b: torch.Tensor, ts: Sequence[float], method: str, out: torch.Tensor) -> None:
    """out[f] = c_a * a + c_b * b row by row, for rows a, b: [N, D] and out: [F, N, D]: one sweep for the rows'
    geometry, then one whole-tensor multiply-add per frame."""
    compute = torch.float32 if a.dtype in (torch.float16, torch.bfloat16) else a.dtype
    a, b = a.to(compute), b.to(compute)
    geometry = _row_geometry(a, b) if method in ("slerp", "nlerp") else [(1.0, 1.0, 1.0)] * a.shape[0]
    for f, t in enumerate(ts):
        coefficients = torch.tensor([_coefficients(method, t, *g) for g in geometry], dtype=compute)
        ca, cb, corth = coefficients.to(a.device).unsqueeze(-1).unbind(1)
        frame = out[f] if out.dtype == compute else torch.empty(a.shape, dtype=compute, device=a.device)
        torch.mul(a, ca, out=frame)
        frame.addcmul_(b, cb)
        antiparallel = coefficients[:, 2] != 0
        if antiparallel.any():
            frame[antiparallel] += corth[antiparallel] * _orthogonal_unit(a[antiparallel])
        if out.dtype != compute:
            out[f] = frame


def interpolate_path(a: torch.Tensor, b: torch.Tensor, ts: Sequence[float], method: str = "slerp",
                     start_dim: int = 1, origin: torch.Tensor | None = None) -> torch.Tensor:
    """Points along the path from ``a`` to ``b``, one per position in ``ts``: a tensor [len(ts), *shape].

    ``a`` and ``b`` have the same shape, or shapes that broadcast (a batch of 1 against a batch of B). t=0 returns ``a``
    and t=1 returns ``b`` exactly. Norms and angles are taken per vector, a vector being the dimensions from
    ``start_dim`` on. With ``origin``, the path is taken between ``a - origin`` and ``b - origin`` and shifted back, so
    slerp turns around ``origin`` (an empty or negative prompt) rather than around zero.
    """
    if method not in METHODS:
        raise ValueError(f"method is '{method}'; expected one of {', '.join(METHODS)}")
    ts = [float(t) for t in ts]
    if not ts:
        raise ValueError("no positions to interpolate at; expected at least one t")
    shape = torch.broadcast_shapes(a.shape, b.shape)
    if origin is not None:
        shape = torch.broadcast_shapes(shape, origin.shape)
        path = interpolate_path(a - origin, b - origin, ts, method, start_dim)
        out = path + origin
    else:
        dims = len(shape)
        start = start_dim % dims if dims else 0
        vector = math.prod(shape[start:])
        a_rows = a.expand(shape).reshape(-1, vector)
        b_rows = b.expand(shape).reshape(-1, vector)
        dtype = torch.promote_types(a.dtype, b.dtype)
        out = torch.empty((len(ts), a_rows.shape[0], vector), dtype=dtype, device=a.device)
        _combine(a_rows, b_rows, ts, method, out)
        out = out.reshape(len(ts), *shape)
    for f, t in enumerate(ts):  # exact endpoints, whatever the rounding of the coefficients
        if t == 0.0:
            out[f] = a.expand(shape)
        elif t == 1.0:
            out[f] = b.expand(shape)
    return out


def interpolate(a: torch.Tensor, b: torch.Tensor, t: float, method: str = "slerp", start_dim: int = 1,
                origin: torch.Tensor | None = None) -> torch.Tensor:
    """The point at ``t`` on the path from ``a`` to ``b`` (see ``interpolate_path``)."""
    return interpolate_path(a, b, [t], method, start_dim, origin)[0]


def interpolate_latents(a: torch.Tensor, b: torch.Tensor, ts: Sequence[float], method: str = "slerp",
                        mask: torch.Tensor | None = None, names: tuple[str, str, str] = ("a", "b", "mask")) -> torch.Tensor:
    """Latent batches [B, C, ...] in, frames out: [len(ts) * B, C, ...], frame-major (all items of frame 0 first).

    One vector per sample, so slerp keeps each sample's overall norm. With a ``mask`` [B or 1, H, W] (any resolution)
    only the masked region travels; the rest stays ``a``. Checks shapes, emptiness and finiteness.
    """
    for x, name in zip((a, b), names):
        require_batch(x, name)
        require_finite(x, name)
    require_compatible(a, b, *names[:2])
    path = interpolate_path(a, b, ts, method, start_dim=1)
    if mask is not None:
        base = a.expand(path.shape[1:])
        path = torch.stack([blend_masked(base, frame, mask, names[2]) for frame in path])
    return path.reshape(-1, *path.shape[2:])


def interpolate_embeddings(a: torch.Tensor, b: torch.Tensor, ts: Sequence[float], method: str = "slerp",
                           origin: torch.Tensor | None = None,
                           names: tuple[str, str, str] = ("a", "b", "origin")) -> torch.Tensor:
    """Embeddings in, frames out, frame-major: token sequences [B, L, D] give [len(ts) * B, L', D], pooled vectors
    [B, D] give [len(ts) * B, D].

    Each token (each pooled vector) is interpolated on its own, so slerp keeps every token's norm. Sequences of
    different lengths are tiled to a common length first (see ``tokens.tile_tokens``). ``origin`` (an empty or
    negative prompt's embedding) makes the path turn around it instead of around zero.
    """
    given = [(x, n) for x, n in zip((a, b, origin), names) if x is not None]
    for x, name in given:
        require_batch(x, name)
        require_finite(x, name)
        if x.ndim not in (2, 3) or x.ndim != a.ndim:
            raise ValueError(f"{name} has shape {tuple(x.shape)}; expected the same kind as {names[0]} "
                             f"{tuple(a.shape)}: tokens [batch, tokens, width] or pooled [batch, width]")
        if x.shape[-1] != a.shape[-1]:
            raise ValueError(f"{name} has width {x.shape[-1]} but {names[0]} has {a.shape[-1]}; "
                             "expected embeddings from the same text encoder")
        if x.shape[0] not in (1, max(a.shape[0], b.shape[0])):
            raise ValueError(f"{name} has batch {x.shape[0]}; expected 1 or the batch of the others")
    if a.ndim == 3:
        length = common_length(*(x.shape[1] for x, _ in given))
        a, b = tile_tokens(a, length), tile_tokens(b, length)
        origin = None if origin is None else tile_tokens(origin, length)
    path = interpolate_path(a, b, ts, method, start_dim=-1, origin=origin)
    return path.reshape(-1, *path.shape[2:])


def _catmull_rom(points: torch.Tensor, segment: int, u: float) -> torch.Tensor:
    """Uniform Catmull-Rom spline through ``points`` [K, ...] at local position ``u`` of ``segment``: C1 at every point."""
    k = points.shape[0]
    p0, p1 = points[max(segment - 1, 0)], points[segment]
    p2, p3 = points[segment + 1], points[min(segment + 2, k - 1)]
    m1 = (p2 - p0) / (2.0 if segment > 0 else 1.0)
    m2 = (p3 - p1) / (2.0 if segment + 2 < k else 1.0)
    u2, u3 = u * u, u * u * u
    return (2 * u3 - 3 * u2 + 1) * p1 + (u3 - 2 * u2 + u) * m1 + (-2 * u3 + 3 * u2) * p2 + (u3 - u2) * m2


def keyframe_path(keys: torch.Tensor, frames_per_segment: int, method: str = "slerp", easing: str = "linear",
                  smooth: bool = False, name: str = "keyframes") -> torch.Tensor:
    """A path through K >= 2 keyframes [K, ...]: (K-1) * frames_per_segment + 1 frames, keyframe i at frame
    i * frames_per_segment exactly.

    ``smooth`` replaces the piecewise path by a Catmull-Rom spline, so the velocity has no kinks at the keyframes; for
    the norm-aware methods the spline runs over unit directions and norms separately, keeping norms on track.
    """
    require_batch(keys, name)
    require_finite(keys, name)
    if keys.shape[0] < 2:
        raise ValueError(f"{name} has {keys.shape[0]} item; expected a batch of at least 2 keyframes")
    if frames_per_segment < 1:
        raise ValueError(f"frames_per_segment is {frames_per_segment}; expected at least 1")
    if method not in METHODS:
        raise ValueError(f"method is '{method}'; expected one of {', '.join(METHODS)}")
    local = [ease(j / frames_per_segment, easing) for j in range(frames_per_segment)]
    segments = keys.shape[0] - 1
    frames = []
    if not smooth:
        for s in range(segments):
            frames.append(interpolate_path(keys[s:s + 1], keys[s + 1:s + 2], local, method, start_dim=1)[:, 0])
    else:
        flat = keys.reshape(keys.shape[0], -1)
        if method == "lerp":
            directions, norms = flat, None
        else:
            norms = torch.linalg.vector_norm(flat.float(), dim=-1).to(flat.dtype)
            directions = flat / norms.clamp_min(torch.finfo(flat.dtype).tiny).unsqueeze(-1)
        for s in range(segments):
            for u in local:
                point = _catmull_rom(directions, s, u)
                if norms is not None:
                    radius = _catmull_rom(norms.unsqueeze(-1), s, u).clamp_min(0.0)
                    length = torch.linalg.vector_norm(point.float()).to(point.dtype)
                    point = point * (radius / length.clamp_min(torch.finfo(point.dtype).tiny))
                frames.append(point.reshape(1, *keys.shape[1:]))
            frames[-frames_per_segment] = keys[s:s + 1].clone()  # the keyframe itself, exactly
    frames.append(keys[-1:].clone())
    return torch.cat(frames, dim=0)


def seeded_noise(seed: int, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard Gaussian noise from ``seed`` on the CPU generator: for a batch-1 shape this is the noise ComfyUI's own
    seeded noise gives for that seed, so a seed's picture is reproduced exactly at its keyframe."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=generator, dtype=dtype, device="cpu")


def noise_travel(seeds: Sequence[int], sample_shape: Sequence[int], frames: int, easing: str = "linear",
                 indices: Sequence[int] | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Noise travelling through the seeds' noises over ``frames`` frames: [len(indices), *sample_shape].

    Consecutive seeds are joined by the variance-preserving path cos(pi t/2) n_i + sin(pi t/2) n_j, so every frame of
    independent Gaussian noises is itself exactly standard Gaussian. Seed k sits at frame k * (frames-1) / (K-1).
    ``indices`` picks frames (default: all).
    """
    if len(seeds) < 2:
        raise ValueError(f"{len(seeds)} seed given; expected at least 2 seeds to travel between")
    if frames < 1:
        raise ValueError(f"frames is {frames}; expected at least 1")
    indices = list(range(frames)) if indices is None else [int(i) for i in indices]
    if any(i < 0 or i >= frames for i in indices):
        raise ValueError(f"frame indices {indices} fall outside 0..{frames - 1}")
    noises = {}

    def noise(k: int) -> torch.Tensor:
        if k not in noises:
            noises[k] = seeded_noise(seeds[k], (1, *sample_shape), dtype)[0]
        return noises[k]

    segments = len(seeds) - 1
    out = torch.empty((len(indices), *sample_shape), dtype=dtype)
    for row, i in enumerate(indices):
        position = 0.0 if frames == 1 else i * segments / (frames - 1)
        s = min(int(position), segments - 1)
        u = ease(position - s, easing)
        out[row] = interpolate(noise(s), noise(s + 1), u, "variance_preserving", start_dim=0)
    return out
