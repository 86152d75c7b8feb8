"""Writing and reading hand meshes (PLY, OBJ, GLB) with trimesh.

Vertices that lie inside the other hand (``HandMesh.inside_other``) are coloured
:data:`PENETRATION_RGBA`, the rest :data:`SKIN_RGBA`, so any viewer shows the contact."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.errors import InputError
from core.types import HandMesh

MESH_FORMATS = ("ply", "obj", "glb")
SKIN_RGBA = (222, 184, 160, 255)
PENETRATION_RGBA = (220, 40, 40, 255)


def to_trimesh(mesh: HandMesh):
    import trimesh

    colors = None
    if mesh.inside_other is not None and len(mesh.vertices):
        colors = np.tile(np.asarray(SKIN_RGBA, np.uint8), (len(mesh.vertices), 1))
        colors[np.asarray(mesh.inside_other, bool)] = PENETRATION_RGBA
    return trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=colors, process=False)


def save_mesh(path: str | Path, mesh: HandMesh, file_format: str | None = None) -> Path:
    """Write ``mesh`` (camera frame, metres); the format comes from ``file_format`` or the suffix."""
    path = Path(path)
    fmt = (file_format or path.suffix.lstrip(".")).lower()
    if fmt not in MESH_FORMATS:
        raise InputError(f"unknown mesh format {fmt!r}; use one of {', '.join(MESH_FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    to_trimesh(mesh).export(path, file_type=fmt)
    return path
