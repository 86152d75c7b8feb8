"""Meshes of many annotated frames: one folder per frame with ``left``, ``right`` and
``penetration`` meshes (camera frame, metres). The reconstruction is passed in, so this
runs with the engine, the app's worker or a stand-in alike."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.io.meshes import save_mesh
from core.types import Reconstruction, TwoHandKeypoints


@dataclass
class MeshJobFrame:
    index: int
    name: str  # folder name of the frame's meshes
    image_rgb: np.ndarray
    keypoints: TwoHandKeypoints


def export_frame_meshes(reconstruct: Callable[[np.ndarray, TwoHandKeypoints], Reconstruction],
                        frames: Iterable[MeshJobFrame], total: int, out_dir: str | Path, fmt: str = "ply",
                        progress: Callable[[int, int], None] | None = None,
                        should_cancel: Callable[[], bool] | None = None) -> list[Path]:  # fmt: skip
    """Reconstruct and write each frame; ``progress(done, total)`` after each. Stops early
    when ``should_cancel()`` turns true (what is written stays)."""
    out_dir = Path(out_dir)
    written = []
    for done, frame in enumerate(frames, start=1):
        if should_cancel is not None and should_cancel():
            break
        rec = reconstruct(frame.image_rgb, frame.keypoints)
        folder = out_dir / frame.name
        for side in ("left", "right"):
            mesh = getattr(rec, side)
            if mesh is not None and not mesh.is_empty:
                written.append(save_mesh(folder / f"{side}.{fmt}", mesh, fmt))
        if rec.penetration_mesh is not None and not rec.penetration_mesh.is_empty:
            written.append(save_mesh(folder / f"penetration.{fmt}", rec.penetration_mesh, fmt))
        if progress is not None:
            progress(done, total)
    return written
