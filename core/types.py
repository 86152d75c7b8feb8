"""Typed data crossing module boundaries: cameras, two-hand keypoints, meshes.

Frames and units used everywhere in the public API:

* **camera frame**: x right, y down, z forward (OpenCV), **metres**;
* pixel coordinates: u right, v down, origin at the top-left pixel corner;
* keypoints: 21 per hand in the ``mano`` (OpenPose / MediaPipe) order, see
  :mod:`core.hand.joints`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Camera:
    """Pinhole camera. ``K`` maps camera-frame metres to pixels of a ``width`` x ``height``
    image. ``R``, ``T`` map world to camera (``x_cam = R @ x_world + T``, metres); keypoints
    handled by the engine are already in the camera frame, so these are identity/zero
    unless a dataset supplies world coordinates."""

    K: np.ndarray
    width: int
    height: int
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    T: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def project(self, points_cam_m: np.ndarray) -> np.ndarray:
        """(..., 3) camera-frame points in metres -> (..., 2) pixels."""
        p = np.asarray(points_cam_m, dtype=np.float64)
        uvw = p @ np.asarray(self.K, dtype=np.float64).T
        return uvw[..., :2] / uvw[..., 2:3]

    def backproject(self, uv: np.ndarray, depth_m: np.ndarray) -> np.ndarray:
        """Pixels (..., 2) at camera-frame depth z (...) -> (..., 3) camera-frame metres."""
        uv = np.asarray(uv, dtype=np.float64)
        z = np.asarray(depth_m, dtype=np.float64)[..., None]
        K = np.asarray(self.K, dtype=np.float64)
        x = (uv[..., 0:1] - K[0, 2]) / K[0, 0]
        y = (uv[..., 1:2] - K[1, 2]) / K[1, 1]
        return np.concatenate([x * z, y * z, z], axis=-1)

    @staticmethod
    def default_for_image(width: int, height: int, fov_deg: float = 50.0) -> Camera:
        """A documented fallback when no intrinsics are known: principal point at the
        image centre and a horizontal field of view of ``fov_deg`` over the longer side."""
        f = 0.5 * max(width, height) / np.tan(np.deg2rad(fov_deg) / 2)
        K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=np.float64)
        return Camera(K=K, width=int(width), height=int(height))


@dataclass
class TwoHandKeypoints:
    """21 3D keypoints per hand, ``mano`` order, camera frame, metres. A hand that is
    absent (not detected, not annotated) is ``None``."""

    left: np.ndarray | None
    right: np.ndarray | None

    def hand(self, side: str) -> np.ndarray | None:
        if side not in ("left", "right"):
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")
        return self.left if side == "left" else self.right

    def present_sides(self) -> tuple[str, ...]:
        return tuple(s for s in ("left", "right") if self.hand(s) is not None)

    def copy(self) -> TwoHandKeypoints:
        return TwoHandKeypoints(
            left=None if self.left is None else np.array(self.left, dtype=np.float64),
            right=None if self.right is None else np.array(self.right, dtype=np.float64),
        )


@dataclass
class HandMesh:
    """A triangle mesh in the camera frame, metres. ``inside_other`` flags vertices that
    lie inside the other hand (interpenetration), or is ``None`` when not computed."""

    vertices: np.ndarray  # (V, 3) float32
    faces: np.ndarray  # (F, 3) int32
    inside_other: np.ndarray | None = None  # (V,) bool

    @property
    def is_empty(self) -> bool:
        return len(self.faces) == 0


@dataclass
class Reconstruction:
    """What :func:`core.engine.reconstruct` returns for one image."""

    left: HandMesh | None
    right: HandMesh | None
    keypoints: TwoHandKeypoints  # the keypoints actually used (after K when enabled)
    camera: Camera  # of the image given by the caller
    penetration_volume_cm3: float = 0.0
    penetration_mesh: HandMesh | None = None  # the region inside both hands
    resolution: int = 0  # effective grid resolution per axis
    stage: str = "final"  # "preview" or "final"
    timings_s: dict[str, float] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)  # the ReconstructionSettings used, as a dict
    # What the engine did: mode, device, refinement_used, cache_hit, evaluations (points per
    # kind of work), notes, anchors_cam_m (R's anchors, final stage only)
    diagnostics: dict = field(default_factory=dict)
