"""A stand-in reconstruction engine for the GUI tests (same interface as core.engine.Engine).

Each hand becomes an icosphere around its keypoints' centroid; vertices inside the other
hand's sphere are flagged, and the overlap lens is reported as the penetration region
with its exact volume. Collected by pytest as a module of its own: its checks of the fake
itself keep the GUI tests honest.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import trimesh

from core.engine.prepare import ONE_HAND_NOTE
from core.types import HandMesh, Reconstruction, TwoHandKeypoints

_SPHERE = trimesh.creation.icosphere(subdivisions=3)


def hand_sphere(joints: np.ndarray) -> tuple[np.ndarray, float]:
    centre = joints.mean(axis=0)
    radius = 0.6 * float(np.linalg.norm(joints - centre, axis=1).max())
    return centre, radius


def lens_volume_m3(r1: float, r2: float, d: float) -> float:
    """Volume of the intersection of two spheres with radii r1, r2 at centre distance d."""
    if d >= r1 + r2:
        return 0.0
    if d <= abs(r1 - r2):
        return 4.0 / 3.0 * np.pi * min(r1, r2) ** 3
    return float(np.pi * (r1 + r2 - d) ** 2 * (d * d + 2 * d * (r1 + r2) - 3 * (r1 - r2) ** 2) / (12 * d))


class FakeEngine:
    mode = "fake"
    device = "cpu"

    def __init__(self, stage_delay_s: float = 0.0, fail_times: int = 0, busy_work: bool = False):
        self.stage_delay_s = stage_delay_s
        self.fail_times = fail_times
        self.busy_work = busy_work
        self.calls = 0
        self.cancelled = 0
        self.last_settings = None

    def _wait(self, should_cancel) -> bool:
        end = time.perf_counter() + self.stage_delay_s
        while time.perf_counter() < end:
            if should_cancel is not None and should_cancel():
                self.cancelled += 1
                return False
            if self.busy_work:  # torch work, as the real engine does (GIL released inside ops)
                a = torch.rand(256, 256)
                for _ in range(4):
                    a = torch.tanh(a @ a)
            else:
                time.sleep(0.005)
        return True

    def reconstruct_progressive(
        self, image_rgb, camera, keypoints: TwoHandKeypoints, settings, should_cancel=None
    ):
        self.calls += 1
        self.last_settings = settings
        if self.fail_times > 0:
            self.fail_times -= 1
            raise RuntimeError("fake engine failure (as asked)")
        spheres = {s: hand_sphere(np.asarray(keypoints.hand(s))) for s in keypoints.present_sides()}
        for stage in ("preview", "final"):
            if not self._wait(should_cancel):
                return
            meshes = {}
            for side, (centre, radius) in spheres.items():
                vertices = (_SPHERE.vertices * radius + centre).astype(np.float32)
                inside = np.zeros(len(vertices), dtype=bool)
                other = spheres.get("left" if side == "right" else "right")
                if other is not None:
                    inside = np.linalg.norm(vertices - other[0], axis=1) < other[1]
                meshes[side] = HandMesh(vertices, _SPHERE.faces.astype(np.int32), inside)
            volume_cm3, pen_mesh = 0.0, None
            if len(spheres) == 2:
                (c1, r1), (c2, r2) = spheres["left"], spheres["right"]
                volume_cm3 = lens_volume_m3(r1, r2, float(np.linalg.norm(c1 - c2))) * 1e6
                if volume_cm3 > 0:
                    mid = (c1 + c2) / 2
                    r = (3 * volume_cm3 * 1e-6 / (4 * np.pi)) ** (1 / 3)
                    pen_mesh = HandMesh(
                        (_SPHERE.vertices * r + mid).astype(np.float32), _SPHERE.faces.astype(np.int32)
                    )
            yield Reconstruction(
                left=meshes.get("left"),
                right=meshes.get("right"),
                keypoints=keypoints.copy(),
                camera=camera,
                penetration_volume_cm3=volume_cm3,
                penetration_mesh=pen_mesh,
                resolution=16 if stage == "preview" else 32,
                stage=stage,
                timings_s={"total": self.stage_delay_s},
                # as the real engine notes it (core/engine/prepare.py)
                diagnostics={"notes": [] if len(spheres) == 2 else [ONE_HAND_NOTE]},
            )


def test_fake_engine_lens_volume_matches_a_numeric_estimate():
    r1, r2, d = 0.05, 0.04, 0.06
    rng = np.random.default_rng(1)
    pts = rng.uniform(-0.06, 0.06, size=(400_000, 3))
    inside = (np.linalg.norm(pts, axis=1) < r1) & (np.linalg.norm(pts - [d, 0, 0], axis=1) < r2)
    estimate = inside.mean() * 0.12**3
    assert abs(lens_volume_m3(r1, r2, d) - estimate) < 0.03 * estimate
