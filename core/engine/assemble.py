"""The last steps of a stage: interpenetration between the two hands' fields, and the
:class:`~core.types.Reconstruction` put together from a job's parts."""

from __future__ import annotations

import numpy as np

from core.engine.hands import GLOBAL_SCALE
from core.engine.penetration import HandField, PenetrationRegion, penetration_region
from core.engine.prepare import PreparedInputs
from core.types import HandMesh, Reconstruction


def mark_penetration(
    meshes: dict[str, HandMesh], fields: dict[str, HandField], settings, resolution: int
) -> PenetrationRegion | None:
    """Flag each mesh's vertices inside the other hand (``inside_other``) and return the
    region inside both, when asked and both hands have a surface; else all flags False."""
    if not (settings.penetration and len(meshes) == 2 and not any(m.is_empty for m in meshes.values())):
        for m in meshes.values():
            m.inside_other = np.zeros(len(m.vertices), dtype=bool)
        return None
    for side, other in (("left", "right"), ("right", "left")):
        meshes[side].inside_other = fields[other].contains(meshes[side].vertices)
    bounds = {side: np.stack([m.vertices.min(0), m.vertices.max(0)]) for side, m in meshes.items()}
    # Sample the overlap no finer than half a grid cell of this stage (metres).
    cell_m = settings.box_size * GLOBAL_SCALE / resolution
    return penetration_region(
        fields["left"],
        fields["right"],
        bounds["left"],
        bounds["right"],
        max(settings.penetration_spacing_m, 0.5 * cell_m),
    )


def assemble_reconstruction(
    inputs: PreparedInputs,
    meshes: dict[str, HandMesh],
    region: PenetrationRegion | None,
    resolution: int,
    stage: str,
    timings_s: dict[str, float],
    diagnostics: dict,
) -> Reconstruction:
    """The stage's result; ``diagnostics``: what the job did (mode, evaluations, notes ...)."""
    return Reconstruction(
        left=meshes.get("left"),
        right=meshes.get("right"),
        keypoints=inputs.keypoints.copy(),
        camera=inputs.camera,
        penetration_volume_cm3=0.0 if region is None else float(region.volume_cm3),
        penetration_mesh=None if region is None else HandMesh(region.vertices_cam_m, region.faces),
        resolution=resolution,
        stage=stage,
        timings_s=timings_s,
        settings=dict(inputs.settings.to_dict()),
        diagnostics=diagnostics,
    )
