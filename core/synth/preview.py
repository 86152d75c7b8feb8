"""Contact sheets of synthetic samples: image + projected skeleton, ground-truth meshes from the
sample camera, and the meshes from a side view."""

from __future__ import annotations

import cv2
import numpy as np

from core.hand.joints import MANO_PARENTS
from core.synth import render as rd
from core.synth.samples import SynthSample
from core.types import Camera

_FINGER_COLOURS = [(255, 80, 80), (255, 200, 0), (60, 220, 60), (0, 200, 255), (200, 90, 255)]
_MESH_ALBEDO = {"left": np.array([0.35, 0.55, 0.95]), "right": np.array([0.95, 0.6, 0.3])}


def _finger_of(joint: int) -> int:
    return max(0, (joint - 1) // 4)


def draw_skeleton(image: np.ndarray, uv: np.ndarray, outline: tuple[int, int, int]) -> np.ndarray:
    """Draw 21 projected keypoints (mano order) with bones coloured per finger; ``outline``
    marks the hand (joint dots)."""
    img = np.ascontiguousarray(image.copy())
    pts = np.round(uv).astype(int)
    for j, parent in enumerate(MANO_PARENTS):
        if parent >= 0:
            cv2.line(img, tuple(pts[parent]), tuple(pts[j]), _FINGER_COLOURS[_finger_of(j)], 1, cv2.LINE_AA)
    for p in pts:
        cv2.circle(img, tuple(p), 2, outline, -1, cv2.LINE_AA)
    return img


def render_meshes(sample: SynthSample, camera: Camera, rotation: np.ndarray | None = None) -> np.ndarray:
    """uint8 RGB render of the ground-truth meshes (left blue, right orange) on white; with
    ``rotation``, the meshes are first turned about their common centre."""
    assert sample.meshes is not None, "generate the sample with keep_meshes=True"
    verts = {s: m.vertices.astype(np.float64) for s, m in sample.meshes.items()}
    if rotation is not None:
        centre = np.vstack(list(verts.values())).mean(0)
        verts = {s: (v - centre) @ rotation.T + centre for s, v in verts.items()}
    layers = [rd.MeshLayer(verts[s], m.faces, _MESH_ALBEDO[s], 1) for s, m in sample.meshes.items()]
    light = rd.Lighting(
        direction_cam=np.array([0.3, -0.5, -0.8]) / np.linalg.norm([0.3, -0.5, -0.8]),
        intensity=0.75,
        ambient=0.3,
        wrap=0.2,
        specular=0.1,
    )
    rgb, labels, _ = rd.shade_layers(layers, camera.K, camera.width, light)
    rgb[labels == 0] = 1.0
    return (rgb * 255).astype(np.uint8)


def sample_tile(sample: SynthSample) -> np.ndarray:
    """(256, 768, 3): image with skeletons | meshes in the camera view | meshes turned 90 deg."""
    img = sample.image
    for side, outline in (("left", (60, 120, 255)), ("right", (255, 140, 40))):
        img = draw_skeleton(img, sample.camera.project(sample.keypoints.hand(side)), outline)
    cv2.putText(
        img,
        f"{sample.seed} {sample.interaction}",
        (3, 12),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.38,
        (255, 255, 255),
        1,
        cv2.LINE_AA,
    )
    front = render_meshes(sample, sample.camera)
    turn = cv2.Rodrigues(np.array([0.0, np.pi / 2, 0.0]))[0]
    side_view = render_meshes(sample, sample.camera, turn)
    return np.hstack([img, front, side_view])


def contact_sheet(samples: list[SynthSample], columns: int = 2) -> np.ndarray:
    """Tiles of :func:`sample_tile` in a grid with ``columns`` samples per row (uint8 RGB)."""
    tiles = [sample_tile(s) for s in samples]
    while len(tiles) % columns:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)]
    return np.vstack(rows)
