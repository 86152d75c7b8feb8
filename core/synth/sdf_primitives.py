"""Signed-distance functions of the primitives the hand is built from (pure torch).

Every function takes query points ``(N, 3)`` and a batch of ``C`` primitives and returns the
exact signed distance ``(N, C)`` (negative inside), in the points' units. Combinations use
:func:`smooth_min`, which keeps the result 1-Lipschitz, so a combined value is a *lower bound*
of the distance to its zero set with the exact sign: an exact inside test.

For speed on the CPU, everything that is linear in the point (coordinates along axes, dot
products with vertices) comes out of one matrix product; only a few elementwise operations
per point-primitive pair remain. Keep coordinates small (subtract a nearby centre first):
squared norms are expanded as ``|p|^2 - 2 p.a + |a|^2``.
"""

from __future__ import annotations

import torch


def round_cone_sdf(
    points: torch.Tensor, a: torch.Tensor, b: torch.Tensor, radius_a: torch.Tensor, radius_b: torch.Tensor
) -> torch.Tensor:
    """Signed distance (N, C) to ``C`` tapered capsules: the convex hull of the spheres
    (a, radius_a) and (b, radius_b). ``a``, ``b`` (C, 3); radii (C,). Requires
    ``|radius_a - radius_b| < |b - a|`` (a finger bone is much longer than its taper).

    The hull equals the union of the spheres centred on the axis with linearly interpolated
    radii. In the plane of the axis and the point (``along`` the axis from a, ``radial`` off it),
    the sphere nearest to the point sits where the point's normal to the cone side meets the
    axis: ``z = along - radial * tan(alpha)`` with ``sin(alpha) = (r_a - r_b) / L``, clamped to
    the segment (the clamp selects the end caps). No branches: ``torch.where`` is slow on CPU."""
    axis = b - a
    length = torch.linalg.vector_norm(axis, dim=-1).clamp_min(1e-9)  # (C,)
    unit = axis / length[:, None]
    sq_p = (points * points).sum(-1, keepdim=True)  # (N, 1)
    along = points @ unit.T - (a * unit).sum(-1)  # (N, C)
    rel_sq = sq_p - 2.0 * (points @ a.T) + (a * a).sum(-1)
    radial_sq = (rel_sq - along * along).clamp_min(0.0)
    sin_alpha = ((radius_a - radius_b) / length).clamp(-0.999, 0.999)
    tan_alpha = sin_alpha / (1.0 - sin_alpha * sin_alpha).sqrt()
    z = torch.minimum((along - radial_sq.sqrt() * tan_alpha).clamp_min(0.0), length)
    radius = radius_a - z * ((radius_a - radius_b) / length)
    return (radial_sq + (along - z) ** 2).sqrt() - radius


def polygon_edges(vertices_2d: list[torch.Tensor], max_edges: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge start/end points (C, max_edges, 2) of counter-clockwise polygons given as a list of
    (M_c, 2) vertex arrays. Shorter polygons are padded with copies of their first edge, which
    change neither the nearest edge nor the inside test."""
    starts, ends = [], []
    for v in vertices_2d:
        v = torch.as_tensor(v)
        e0, e1 = v, torch.roll(v, shifts=-1, dims=0)
        pad = max_edges - len(v)
        if pad < 0:
            raise ValueError(f"polygon with {len(v)} vertices exceeds max_edges={max_edges}")
        starts.append(torch.cat([e0, e0[:1].expand(pad, 2)]))
        ends.append(torch.cat([e1, e1[:1].expand(pad, 2)]))
    return torch.stack(starts), torch.stack(ends)


def swept_polygon_sdf(
    points: torch.Tensor,
    origin: torch.Tensor,
    axes: torch.Tensor,
    edge_start: torch.Tensor,
    edge_end: torch.Tensor,
    radius: torch.Tensor,
) -> torch.Tensor:
    """Signed distance (N, C) to ``C`` planar convex polygons swept by a sphere (a rounded slab;
    for a triangle, the convex hull of three equal spheres).

    ``origin`` (C, 3) a point of the plane; ``axes`` (C, 3, 3) rows = in-plane u, in-plane v,
    normal; ``edge_start``/``edge_end`` (C, M, 2) the edges of a counter-clockwise polygon in
    (u, v), see :func:`polygon_edges`; ``radius`` (C,).

    Long: one closed-form distance whose steps share the projected coordinates."""
    n_poly, n_edges = edge_start.shape[:2]
    u, v, normal = axes[:, 0], axes[:, 1], axes[:, 2]  # (C, 3)
    edge = edge_end - edge_start  # (C, M, 2)
    edge_sq = (edge * edge).sum(-1).clamp_min(1e-18)
    # Linear forms of the point, per edge: (p - o) . w + c
    w_along = (u[:, None] * edge[..., :1] + v[:, None] * edge[..., 1:]) / edge_sq[
        ..., None
    ]  # s = along/|e|^2
    w_cross = v[:, None] * edge[..., :1] - u[:, None] * edge[..., 1:]  # 2D cross(edge, uv - v0)
    w_vert = u[:, None] * edge_start[..., :1] + v[:, None] * edge_start[..., 1:]  # uv . v0
    c_along = -(edge_start * edge).sum(-1) / edge_sq
    c_cross = edge[..., 1] * edge_start[..., 0] - edge[..., 0] * edge_start[..., 1]
    c_vert = (edge_start * edge_start).sum(-1)
    # Shift all forms from (p - o) to p: w . (p - o) + c = w . p + (c - w . o)
    o = origin[:, None, :]
    weights = torch.cat(
        [w_along, w_cross, -2.0 * w_vert, normal[:, None], origin[:, None]], dim=1
    )  # (C, 3M + 2, 3)
    consts = torch.cat(
        [
            c_along - (w_along * o).sum(-1),
            c_cross - (w_cross * o).sum(-1),
            c_vert + 2.0 * (w_vert * o).sum(-1),
            -(normal * origin).sum(-1, keepdim=True),
            torch.zeros_like(radius)[:, None],
        ],
        dim=1,
    )
    forms = points @ weights.reshape(-1, 3).T + consts.reshape(-1)  # (N, C * (3M + 2))
    forms = forms.reshape(len(points), n_poly, 3 * n_edges + 2)
    s, cross, vert_term = (
        forms[..., :n_edges],
        forms[..., n_edges : 2 * n_edges],
        forms[..., 2 * n_edges : 3 * n_edges],
    )
    height = forms[..., 3 * n_edges]
    p_dot_o = forms[..., 3 * n_edges + 1]
    rel_sq = ((points * points).sum(-1, keepdim=True) - 2.0 * p_dot_o + (origin * origin).sum(-1)).clamp_min(
        0.0
    )
    uv_sq = (rel_sq - height * height).clamp_min(0.0)  # |uv|^2
    t = s.clamp(0.0, 1.0)
    # |uv - v0 - t e|^2 = |uv|^2 - 2 uv.v0 + |v0|^2 - t (2 s - t) |e|^2
    seg_sq = uv_sq[..., None] + vert_term - t * (2.0 * s - t) * edge_sq
    outside = cross.amin(-1) < 0  # inside a CCW convex polygon iff left of every edge
    in_plane_sq = seg_sq.amin(-1).clamp_min(0.0) * outside
    return (in_plane_sq + height * height).sqrt() - radius


def smooth_min(a: torch.Tensor, b: torch.Tensor, k: float) -> torch.Tensor:
    """Quadratic smooth minimum with blend width ``k`` (same units as a, b). It is a convex
    combination of the gradients of ``a`` and ``b``, so it stays 1-Lipschitz, and it is
    never above ``min(a, b)``: a fillet of radius ~k where two shapes meet."""
    if k <= 0:
        return torch.minimum(a, b)
    h = (k - (a - b).abs()).clamp_min(0.0) / k
    return torch.minimum(a, b) - h * h * (k / 4.0)


def box_distance(points: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Unsigned distance (N,) from points to an axis-aligned box (0 inside)."""
    outside = torch.maximum(lo - points, points - hi).clamp_min(0.0)
    return torch.linalg.vector_norm(outside, dim=-1)
