"""Draw reconstructed hand meshes over the photo they came from (CPU, no GL).

Meshes are in the photo's camera frame (metres), so projecting them with the photo's
intrinsics puts them exactly where the networks saw the hands. Used by
``main.py reconstruct --overlay`` and for headless checks.
"""

from __future__ import annotations

import numpy as np

from core.geometry.raster import rasterize, vertex_normals
from core.types import Camera, HandMesh

# RGB in [0, 1]; the app uses the same hues (right orange, left blue, penetration magenta).
HAND_COLORS = {"left": (0.25, 0.55, 0.95), "right": (0.95, 0.55, 0.2)}
PENETRATION_COLOR = (0.9, 0.1, 0.8)


def render_meshes_over_image(
    image_rgb: np.ndarray,
    camera: Camera,
    meshes: dict[str, HandMesh | None],
    opacity: float = 0.75,
) -> np.ndarray:
    """Blend headlight-shaded ``meshes`` ({"left"/"right": HandMesh}) into a copy of
    ``image_rgb`` (H, W, 3) uint8. Vertices flagged ``inside_other`` are drawn in the
    penetration colour."""
    image = np.asarray(image_rgb)
    h, w = image.shape[:2]
    if (camera.width, camera.height) != (w, h):
        raise ValueError(f"camera is {camera.width}x{camera.height} but the image is {w}x{h}")
    verts, faces, colors = [], [], []
    offset = 0
    for side, mesh in meshes.items():
        if mesh is None or mesh.is_empty:
            continue
        v = np.asarray(mesh.vertices, dtype=np.float64)
        c = np.tile(np.asarray(HAND_COLORS.get(side, (0.7, 0.7, 0.7))), (len(v), 1))
        if mesh.inside_other is not None:
            c[np.asarray(mesh.inside_other, dtype=bool)] = PENETRATION_COLOR
        verts.append(v)
        faces.append(np.asarray(mesh.faces, dtype=np.int64) + offset)
        colors.append(c)
        offset += len(v)
    out = image.astype(np.float32) / 255.0
    if not verts:
        return image.copy()
    verts_all, faces_all, colors_all = np.concatenate(verts), np.concatenate(faces), np.concatenate(colors)
    frags = rasterize(verts_all, faces_all, camera.K, w, h, cull_backfaces=False)
    mask = frags.mask
    if not mask.any():
        return image.copy()
    tri = faces_all[frags.face[mask]]
    bary = frags.bary[mask][..., None]
    normal = (vertex_normals(verts_all, faces_all)[tri] * bary).sum(1)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    position = (verts_all[tri] * bary).sum(1)
    view = -position / np.linalg.norm(position, axis=1, keepdims=True)
    # |n.v| shades both faces alike, so inverted or open meshes still read correctly.
    shade = 0.35 + 0.65 * np.abs((normal * view).sum(1, keepdims=True))
    color = (colors_all[tri] * bary).sum(1) * shade
    out[mask] = (1 - opacity) * out[mask] + opacity * color
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)
