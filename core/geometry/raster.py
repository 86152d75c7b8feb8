"""A small z-buffer triangle rasteriser (pure numpy, vectorised over triangles).

Camera frame x right, y down, z forward, metres; pixels u right, v down with pixel ``(i, j)``
centred at ``(i + 0.5, j + 0.5)`` (as :class:`core.types.Camera`). Triangles are expanded to the
pixel centres inside their bounding boxes, tested with edge functions and resolved with a
depth buffer; depth is interpolated perspective-correctly (1/z is linear in screen space).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEAR_PLANE_M = 0.05


@dataclass
class Fragments:
    """Per-pixel result of :func:`rasterize`: ``face`` (H, W) int64 index of the visible
    triangle or -1; ``depth_m`` (H, W) camera z (inf where empty); ``bary`` (H, W, 3)
    perspective-correct barycentric weights of the triangle's vertices."""

    face: np.ndarray
    depth_m: np.ndarray
    bary: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        return self.face >= 0


def rasterize(
    verts_cam_m: np.ndarray,
    faces: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    cull_backfaces: bool = True,
) -> Fragments:
    """Rasterise triangles ``faces`` (F, 3) over vertices (V, 3) in the camera frame.
    Back faces (outward CCW winding seen from behind) are skipped when ``cull_backfaces``.

    Long: one vectorised pipeline (expand, edge test, depth) over large shared temporaries."""
    verts = np.asarray(verts_cam_m, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    face_out = np.full((height, width), -1, dtype=np.int64)
    depth_out = np.full((height, width), np.inf)
    bary_out = np.zeros((height, width, 3))
    if len(faces) == 0:
        return Fragments(face_out, depth_out, bary_out)
    z = verts[:, 2]
    uv = verts[:, :2] @ np.asarray(K)[:2, :2].T / np.maximum(z, 1e-9)[:, None] + np.asarray(K)[:2, 2]
    tri_uv = uv[faces]  # (F, 3, 2)
    tri_z = z[faces]
    keep = np.all(tri_z > NEAR_PLANE_M, axis=1)
    e1 = tri_uv[:, 1] - tri_uv[:, 0]
    e2 = tri_uv[:, 2] - tri_uv[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]  # < 0: outward normal towards the camera (-z)
    keep &= np.abs(area) > 1e-12
    if cull_backfaces:
        keep &= area < 0
    lo = np.ceil(tri_uv.min(axis=1) - 0.5).astype(np.int64)
    hi = np.floor(tri_uv.max(axis=1) - 0.5).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, [width - 1, height - 1])
    keep &= np.all(hi >= lo, axis=1)
    idx = np.nonzero(keep)[0]
    if len(idx) == 0:
        return Fragments(face_out, depth_out, bary_out)
    lo, hi = lo[idx], hi[idx]
    box_w = hi[:, 0] - lo[:, 0] + 1
    box_h = hi[:, 1] - lo[:, 1] + 1
    counts = box_w * box_h
    tri = np.repeat(np.arange(len(idx)), counts)
    local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    px = lo[tri, 0] + local % box_w[tri]
    py = lo[tri, 1] + local // box_w[tri]
    p = np.stack([px + 0.5, py + 0.5], axis=-1)
    t_uv = tri_uv[idx][tri]  # (P, 3, 2)
    a = area[idx][tri]

    def edge(i: int, j: int) -> np.ndarray:  # twice the signed area of (v_i, v_j, p)
        vi, vj = t_uv[:, i], t_uv[:, j]
        return (vj[:, 0] - vi[:, 0]) * (p[:, 1] - vi[:, 1]) - (vj[:, 1] - vi[:, 1]) * (p[:, 0] - vi[:, 0])

    w = np.stack([edge(1, 2), edge(2, 0), edge(0, 1)], axis=-1) / a[:, None]  # screen barycentrics
    inside = np.all(w >= -1e-9, axis=1)
    w, tri, px, py = w[inside], tri[inside], px[inside], py[inside]
    inv_z = (w / tri_z[idx][tri]).sum(axis=1)
    depth = 1.0 / inv_z
    flat = py * width + px
    zbuf = np.full(width * height, np.inf)
    np.minimum.at(zbuf, flat, depth)
    win = depth <= zbuf[flat]
    flat, tri, w, depth = flat[win], tri[win], w[win], depth[win]
    face_out.reshape(-1)[flat] = idx[tri]
    depth_out.reshape(-1)[flat] = depth
    persp = w / tri_z[idx][tri] * depth[:, None]
    bary_out.reshape(-1, 3)[flat] = persp
    return Fragments(face_out, depth_out, bary_out)


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3) of an outward-oriented mesh."""
    v = np.asarray(verts, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    n_face = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], n_face)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
