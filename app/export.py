"""Export of the current reconstruction's meshes (no Qt).

Names and colours follow the one convention of :mod:`core.io.meshes` (shared with
``main.py reconstruct``); the files are replaced together with a ``<stem>.manifest.json``
written last (:class:`core.io.output_set.OutputFiles`)."""

from __future__ import annotations

from pathlib import Path

from core.errors import InputError
from core.io.meshes import MESH_FORMATS, mesh_set_writers
from core.io.output_set import OutputFiles, check_output_file
from core.types import Reconstruction

MESH_SUFFIXES = tuple(f".{fmt}" for fmt in MESH_FORMATS)


class ExportError(InputError):
    """Nothing to export, or an unsupported file type."""


def export_meshes(path: str | Path, reconstruction: Reconstruction | None) -> list[Path]:
    """Write the hand meshes (camera frame, metres). GLB: one scene ``<stem>.glb`` with nodes
    ``left``, ``right`` (and ``penetration``); PLY / OBJ: ``<stem>_<part><suffix>``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise ExportError(f"unsupported mesh format {suffix!r}; use one of {', '.join(MESH_SUFFIXES)}")
    check_output_file(path, MESH_SUFFIXES, "mesh export")
    if reconstruction is None:
        raise ExportError("there is no reconstructed mesh to export yet")
    try:
        writers = mesh_set_writers(reconstruction, suffix, prefix=path.stem)
    except InputError as exc:
        raise ExportError(str(exc)) from None
    out = OutputFiles(path.parent, path.stem, "mesh export")
    for name, writer in writers.items():
        out.add(name, writer)
    return out.commit()
