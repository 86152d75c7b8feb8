"""Meshes of many annotated frames: one folder per frame, ``<out>/<frame>/``, holding the mesh
set of :func:`core.io.meshes.mesh_set_writers` (``left``, ``right``, ``penetration`` when the
hands overlap; GLB: one ``hands.glb``) and a ``manifest.json``. The reconstruction is passed
in, so this runs with the engine, the app's worker or a stand-in alike.

Each frame's folder is one output set (:class:`core.io.output_set.OutputFolder`): it is
written in a hidden sibling and swapped in whole, so a failure, a cancel or a kill in the
middle of a frame leaves that frame's previous folder (or none), never a partial one; frames
finished before stay complete. Every frame's folder is checked before the first
reconstruction, so a folder we did not write is refused before any work."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.io.meshes import check_mesh_format, mesh_set_writers
from core.io.output_set import MANIFEST_NAME, OutputFolder, OutputPathError
from core.types import Reconstruction, TwoHandKeypoints


@dataclass
class MeshJobFrame:
    index: int
    name: str  # folder name of the frame's meshes
    load_image: Callable[[], np.ndarray]  # RGB; decoded only when the frame's turn comes
    keypoints: TwoHandKeypoints


@dataclass
class FrameMeshExport:
    written: list[Path] = field(default_factory=list)  # every file, manifests included
    empty_frames: list[int] = field(default_factory=list)  # both meshes empty: nothing written
    cancelled: bool = False


def _frame_folders(frames: Sequence[MeshJobFrame], out_dir: Path) -> list[OutputFolder]:
    """One checked output folder per frame (raises before any work: see the module docstring)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputPathError(f"mesh export: {out_dir} is a file; give a folder")
    names = [frame.name for frame in frames]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"mesh export: several frames share the folder name(s) {', '.join(repeated)}")
    for name in names:
        if not name or Path(name).name != name or name.startswith("."):
            raise InputError(f"mesh export: {name!r} cannot name a frame's folder")
    return [OutputFolder(out_dir / frame.name, f"mesh export, frame {frame.index}:") for frame in frames]


def export_frame_meshes(reconstruct: Callable[[np.ndarray, TwoHandKeypoints], Reconstruction],
                        frames: Sequence[MeshJobFrame], out_dir: str | Path, fmt: str = "ply",
                        progress: Callable[[int, int], None] | None = None,
                        should_cancel: Callable[[], bool] | None = None) -> FrameMeshExport:  # fmt: skip
    """Reconstruct and write each frame; ``progress(done, total)`` after each. Stops before
    the next frame when ``should_cancel()`` turns true (finished frames stay)."""
    fmt = check_mesh_format(fmt)
    folders = _frame_folders(frames, Path(out_dir))
    result = FrameMeshExport()
    for done, (frame, folder) in enumerate(zip(frames, folders, strict=True), start=1):
        if should_cancel is not None and should_cancel():
            result.cancelled = True
            break
        rec = reconstruct(frame.load_image(), frame.keypoints)
        try:
            writers = mesh_set_writers(rec, fmt)
        except InputError:  # both meshes empty: say which frame, export the others
            result.empty_frames.append(frame.index)
        else:
            for name, writer in writers.items():
                folder.add(name, writer)
            written = folder.commit({"frame_index": frame.index})
            result.written += [*written, folder.folder / MANIFEST_NAME]
        if progress is not None:
            progress(done, len(frames))
    return result
