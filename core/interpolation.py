"""Interpolation between tensors: lerp, slerp, nlerp and variance-preserving paths, easing, keyframed paths.

Every method is a per-vector combination ``out = c_a * a + c_b * b``; a *vector* is everything from ``start_dim`` on
(``start_dim=1``: one vector per latent sample; ``start_dim=-1``: one vector per token of a conditioning). Only the
coefficients differ between methods: lerp and the variance-preserving path use the same scalars for every vector;
slerp and nlerp first read each vector's norm and its dot product with its partner in one sweep over the inputs, and
compute all vectors' coefficients at once as small tensors. Then each frame is combined: by a multiply and a
multiply-add over the whole tensors, which never waits on the device; on the CPU, for long vectors (latent samples), by
one fused pass per vector, its coefficients read on the host (free there).
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
# From this length on, the CPU works through the vectors one by one: BLAS dot products for their geometry, then one
# fused pass per vector for the combination (a whole-tensor multiply and multiply-add would be two passes).
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


def frame_positions(frames: int, t: float, t_start: float, t_end: float,
                    easing: str = "linear") -> list[float]:
    """The positions a node's frame inputs ask for: ``t`` alone for one frame, else ``frames`` positions from
    ``t_start`` to ``t_end`` spaced by the easing."""
    for name, value in (("t", t), ("t_start", t_start), ("t_end", t_end)):
        if not math.isfinite(value):
            raise ValueError(f"{name} is {value}; expected a finite number")
    return [float(t)] if frames == 1 else path_positions(frames, t_start, t_end, easing)


def _antiparallel(ra: torch.Tensor, rb: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Which vector pairs point (nearly) opposite ways, where no great circle is defined: [N] booleans."""
    sin = (1.0 - cos * cos).clamp_min(0.0).sqrt()
    return (sin <= _DEGENERATE_SIN) & (cos < 0) & (ra > 0) & (rb > 0)


def _slerp_coefficients(method: str, t: float, ra: torch.Tensor, rb: torch.Tensor,
                        cos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coefficients (c_a, c_b, c_orth), each [N], of ``a``, ``b`` and a unit vector orthogonal to ``a`` for N vector
    pairs with norms ``ra``, ``rb`` and cosines ``cos``; slerp and nlerp keep the norm on the straight line between ra
    and rb. Tensor operations only, so nothing waits on the device."""
    radius = ((1.0 - t) * ra + t * rb).clamp_min(0.0)
    a_zero, b_zero = ra == 0, rb == 0
    ra_safe, rb_safe = torch.where(a_zero, 1.0, ra), torch.where(b_zero, 1.0, rb)
    sin = (1.0 - cos * cos).clamp_min(0.0).sqrt()
    if method == "slerp":  # the great circle, except where it is numerically undefined
        great = sin > _DEGENERATE_SIN
        theta, sin_safe = torch.atan2(sin, cos), torch.where(great, sin, 1.0)
        sa = torch.where(great, torch.sin((1.0 - t) * theta) / sin_safe, 1.0 - t)
        sb = torch.where(great, torch.sin(t * theta) / sin_safe, t)
    else:  # nlerp, which is also slerp's limit for (nearly) parallel vectors
        sa, sb = torch.full_like(cos, 1.0 - t), torch.full_like(cos, t)
    # Normalise the unit-vector combination analytically: its norm follows from the scalars, no extra tensor pass.
    direction_norm = (sa * sa + sb * sb + 2.0 * sa * sb * cos).clamp_min(0.0).sqrt()
    scale = torch.where(direction_norm > 0, radius / torch.where(direction_norm > 0, direction_norm, 1.0), 0.0)
    ca, cb = scale * sa / ra_safe, scale * sb / rb_safe
    # Antiparallel: turn through a fixed orthogonal direction, the norm still moving from ra to rb.
    antiparallel = _antiparallel(ra, rb, cos)
    ca = torch.where(antiparallel, radius * math.cos(math.pi * t) / ra_safe, ca)
    cb = torch.where(antiparallel, 0.0, cb)
    c_orth = torch.where(antiparallel, radius * math.sin(math.pi * t), 0.0)
    # A zero endpoint has no direction: travel along the other one's.
    ca = torch.where(a_zero, 0.0, torch.where(b_zero, radius / ra_safe, ca))
    cb = torch.where(b_zero, 0.0, torch.where(a_zero, radius / rb_safe, cb))
    return ca, cb, c_orth


def _orthogonal_unit(a_rows: torch.Tensor) -> torch.Tensor:
    """A deterministic unit vector orthogonal to each row: a fixed Gaussian direction, Gram-Schmidt against the row."""
    generator = torch.Generator(device="cpu").manual_seed(0x15C)
    g = torch.randn(a_rows.shape[-1], generator=generator, dtype=torch.float64).to(a_rows.device)
    u = a_rows.double() / a_rows.double().norm(dim=-1, keepdim=True)
    p = g.expand_as(u) - (u @ g).unsqueeze(-1) * u
    return (p / p.norm(dim=-1, keepdim=True)).to(a_rows.dtype)


def _row_by_row(rows: torch.Tensor) -> bool:
    return rows.device.type == "cpu" and rows.shape[1] >= _LONG_ROW


def _row_geometry(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Norms of a, norms of b and the cosines between them, each [N], for rows a, b: [N, D]."""
    if _row_by_row(a):  # no temporary the size of the input
        squares = torch.stack([torch.stack([torch.dot(x, x), torch.dot(y, y), torch.dot(x, y)]) for x, y in zip(a, b)])
    else:
        squares = torch.stack([torch.linalg.vecdot(a, a), torch.linalg.vecdot(b, b), torch.linalg.vecdot(a, b)], dim=1)
    # The coefficients in double precision where the device has it (Apple's MPS has not).
    squares = squares.to(torch.float32 if a.device.type == "mps" else torch.float64)
    ra, rb = squares[:, 0].clamp_min(0.0).sqrt(), squares[:, 1].clamp_min(0.0).sqrt()
    cos = torch.where((ra > 0) & (rb > 0), squares[:, 2] / (ra * rb).clamp_min(torch.finfo(squares.dtype).tiny), 1.0)
    return ra, rb, cos.clamp(-1.0, 1.0)


def _combine_rows(a: torch.Tensor, b: torch.Tensor, ca: torch.Tensor, cb: torch.Tensor, out: torch.Tensor) -> None:
    """out = ca * a + cb * b for rows a, b: [N, D] and coefficients [N]."""
    if _row_by_row(a):
        # addr computes beta * x + alpha * (1 outer y) in a single pass; the coefficients are already on the host.
        one = torch.ones(1, dtype=a.dtype)
        for x, y, alpha, beta, row in zip(a, b, cb.tolist(), ca.tolist(), out):
            torch.addr(x[None], one, y, beta=beta, alpha=alpha, out=row[None])
    else:  # no loop and no read back, so nothing waits on the device
        torch.mul(a, ca.to(a.dtype).unsqueeze(-1), out=out).addcmul_(b, cb.to(a.dtype).unsqueeze(-1))


def _combine(a: torch.Tensor, b: torch.Tensor, ts: Sequence[float], method: str, out: torch.Tensor) -> None:
    """out[f] = c_a * a + c_b * b row by row, for rows a, b: [N, D] and out: [F, N, D]. Lerp and the
    variance-preserving path have the same scalar coefficients for every row. Slerp and nlerp first sweep the inputs
    once for each row's norms and dot product, compute all rows' coefficients at once as [N] tensors, then combine."""
    compute = torch.float32 if a.dtype in (torch.float16, torch.bfloat16) else a.dtype
    a, b = a.to(compute), b.to(compute)
    if method in ("slerp", "nlerp"):
        geometry = _row_geometry(a, b)
        antiparallel = _antiparallel(*geometry)
        # The call's one read back from the device: whether the antiparallel edge case occurs at all.
        rows = antiparallel.nonzero().flatten() if bool(antiparallel.any()) else None
        orthogonal = None if rows is None else _orthogonal_unit(a[rows])
    for f, t in enumerate(ts):
        frame = out[f] if out.dtype == compute else torch.empty(a.shape, dtype=compute, device=a.device)
        if method == "lerp":
            torch.lerp(a, b, t, out=frame)
        elif method == "variance_preserving":
            torch.mul(a, math.cos(t * math.pi / 2), out=frame).add_(b, alpha=math.sin(t * math.pi / 2))
        else:
            ca, cb, c_orth = _slerp_coefficients(method, t, *geometry)
            _combine_rows(a, b, ca, cb, frame)
            if rows is not None:
                frame[rows] += c_orth[rows].to(compute).unsqueeze(-1) * orthogonal
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
    if not all(math.isfinite(t) for t in ts):
        raise ValueError(f"the positions {ts} include NaN or infinity; expected finite numbers")
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
