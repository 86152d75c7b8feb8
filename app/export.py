"""Export of the current reconstruction's meshes (no Qt)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from core.errors import InputError
from core.hand.joints import HAND_SIDES
from core.io.meshes import PENETRATION_RGBA, to_trimesh
from core.types import HandMesh, Reconstruction

MESH_SUFFIXES = (".ply", ".obj", ".glb")


class ExportError(InputError):
    """Nothing to export, or an unsupported file type."""


def _penetration_trimesh(mesh: HandMesh) -> trimesh.Trimesh:
    colors = np.tile(np.asarray(PENETRATION_RGBA, dtype=np.uint8), (len(mesh.vertices), 1))
    return trimesh.Trimesh(
        np.asarray(mesh.vertices), np.asarray(mesh.faces), vertex_colors=colors, process=False
    )


def export_meshes(path: str | Path, reconstruction: Reconstruction | None) -> list[Path]:
    """Write the hand meshes (camera frame, metres). GLB: one scene with nodes ``left``,
    ``right`` (and ``penetration``); PLY / OBJ: one file per hand, ``<stem>_<side><suffix>``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise ExportError(f"unsupported mesh format {suffix!r}; use one of {', '.join(MESH_SUFFIXES)}")
    meshes = {}
    if reconstruction is not None:
        for side in HAND_SIDES:
            mesh = getattr(reconstruction, side)
            if mesh is not None and not mesh.is_empty:
                meshes[side] = to_trimesh(mesh)  # skin, penetrating vertices in red
        pen = reconstruction.penetration_mesh
        if pen is not None and not pen.is_empty:
            meshes["penetration"] = _penetration_trimesh(pen)
    if not any(side in meshes for side in HAND_SIDES):
        raise ExportError("there is no reconstructed mesh to export yet")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".glb":
        scene = trimesh.Scene()
        for name, mesh in meshes.items():
            scene.add_geometry(mesh, node_name=name, geom_name=name)
        scene.export(path)
        return [path]
    written = []
    for name, mesh in meshes.items():
        target = path.with_name(f"{path.stem}_{name}{suffix}")
        mesh.export(target)
        written.append(target)
    return written
