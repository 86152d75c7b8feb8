"""Writing and reading hand meshes (PLY, OBJ, GLB) with trimesh.

**The one export convention** (the CLI's ``reconstruct`` and the app's export both use
:func:`mesh_set_writers`):

* parts ``left``, ``right`` and, when the hands overlap, ``penetration``;
* colours: hand vertices that lie inside the other hand (``HandMesh.inside_other``) are
  :data:`PENETRATION_RGBA`, the rest :data:`SKIN_RGBA`; the penetration mesh is wholly
  :data:`PENETRATION_RGBA`;
* names: PLY / OBJ give one file per part, ``<prefix>_<part>.<fmt>`` (``<part>.<fmt>`` when
  the prefix is empty, as in a ``reconstruct`` output folder); GLB is a scene format, so it
  gives one file ``<prefix>.glb`` (``hands.glb`` without a prefix) whose nodes are the parts.

Files are written through :mod:`core.io.atomic` (never half-written)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.io.atomic import atomic_path
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


def _penetration_trimesh(mesh: HandMesh):
    import trimesh

    colors = np.tile(np.asarray(PENETRATION_RGBA, dtype=np.uint8), (len(mesh.vertices), 1))
    return trimesh.Trimesh(
        np.asarray(mesh.vertices), np.asarray(mesh.faces), vertex_colors=colors, process=False
    )


def check_mesh_format(fmt: str) -> str:
    fmt = fmt.lower().lstrip(".")
    if fmt not in MESH_FORMATS:
        raise InputError(f"unknown mesh format {fmt!r}; use one of {', '.join(MESH_FORMATS)}")
    return fmt


def mesh_parts(reconstruction) -> dict:
    """``{part: trimesh}`` of a :class:`~core.types.Reconstruction`, coloured by the
    convention above; empty meshes are left out."""
    parts = {}
    for side in ("left", "right"):
        mesh = getattr(reconstruction, side, None)
        if mesh is not None and not mesh.is_empty:
            parts[side] = to_trimesh(mesh)
    pen = getattr(reconstruction, "penetration_mesh", None)
    if pen is not None and not pen.is_empty:
        parts["penetration"] = _penetration_trimesh(pen)
    return parts


def mesh_set_writers(reconstruction, fmt: str, prefix: str = "") -> dict[str, Callable[[Path], None]]:
    """``{file name: writer(path)}`` of a reconstruction's mesh set (names and colours: the
    module docstring). Raises :class:`InputError` when there is no mesh to write."""
    fmt = check_mesh_format(fmt)
    parts = mesh_parts(reconstruction)
    if not any(side in parts for side in ("left", "right")):
        raise InputError(
            "both hand meshes are empty: nothing to write (are the keypoints in metres, camera frame?)"
        )
    if fmt == "glb":

        def write_scene(path: Path) -> None:
            import trimesh

            scene = trimesh.Scene()
            for name, mesh in parts.items():
                scene.add_geometry(mesh, node_name=name, geom_name=name)
            scene.export(path, file_type="glb")

        return {f"{prefix or 'hands'}.glb": write_scene}

    def writer(mesh):
        return lambda path: mesh.export(path, file_type=fmt)

    return {(f"{prefix}_{name}" if prefix else name) + f".{fmt}": writer(m) for name, m in parts.items()}


def save_mesh(path: str | Path, mesh: HandMesh, file_format: str | None = None) -> Path:
    """Write ``mesh`` (camera frame, metres) atomically; the format comes from
    ``file_format`` or the suffix."""
    path = Path(path)
    fmt = check_mesh_format(file_format or path.suffix)
    with atomic_path(path) as tmp:
        to_trimesh(mesh).export(tmp, file_type=fmt)
    return path
