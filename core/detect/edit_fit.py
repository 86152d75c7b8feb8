"""The skeleton fit (:mod:`.skeleton_fit`) used for editing: keep a hand's bone lengths
plausible when the annotator places a hand in a box or drags one joint in 2D.

* :func:`hand_in_box` -- a hand of the anthropometric prior's size and proportions fitted to
  the template's outline in a pixel box, then moved in depth (its size kept) until its image
  fits the box like the template's;
* :func:`hand_after_2d_drag` -- the hand refitted after one joint was dragged to a pixel: that
  joint is pinned (a tight, never down-weighted 2D term), the others keep their pixels loosely
  and their bones' depth directions, the wrist keeps its depth, the bones their proportions.

Both return a :class:`HandFit` (camera frame, metres, ``mano`` order), so callers may show
the fit's per-joint confidence too. Pure numpy; the app decides whether to use them.
"""

from __future__ import annotations

import numpy as np

from core.detect.skeleton_fit import FitOptions, HandFit, HandObservation, fit_hand
from core.detect.template import template_in_box
from core.types import Camera

# The edited hand's own 3D shape is a better depth cue than MediaPipe's: follow it more closely.
EDIT_OPTIONS = FitOptions(depth_direction_sigma=0.15, iterations=20)


def hand_in_box(side: str, camera: Camera, box_px, options: FitOptions | None = None) -> HandFit:
    """A plausible ``side`` hand whose projection fills ``box_px`` = (x0, y0, x1, y1) like
    the template hand (palm to the camera, fingers up), at the depth where a hand of the
    prior's size has that image."""
    box = tuple(float(v) for v in box_px)
    template = template_in_box(box, camera, sides=(side,)).hand(side)
    observation = HandObservation(side, camera.project(template), template - template.mean(axis=0))
    fit = fit_hand(observation, camera, options or EDIT_OPTIONS)
    fit.joints_m = _move_into_box(fit.joints_m, camera, box)
    return fit


def _move_into_box(joints: np.ndarray, camera: Camera, box: tuple[float, float, float, float]) -> np.ndarray:
    """Translate ``joints`` (shape and size kept) so that their image's bounding box is centred
    in ``box`` and touches it on its tighter side (a few fixed-point steps; each changes the
    depth by the image's size ratio and re-centres along the ray)."""
    box_lo, box_hi = np.array(box[:2]), np.array(box[2:])
    for _ in range(4):
        uv = camera.project(joints)
        lo, hi = uv.min(axis=0), uv.max(axis=0)
        ratio = float(np.max((hi - lo) / (box_hi - box_lo)))
        centre = joints.mean(axis=0)
        centre_px = camera.project(centre) + (box_lo + box_hi) / 2 - (lo + hi) / 2
        joints = joints - centre + camera.backproject(centre_px, np.array(centre[2] * ratio))
    return joints


def hand_after_2d_drag(side: str, joints_cam_m: np.ndarray, camera: Camera, joint: int, uv_px,
                       options: FitOptions | None = None) -> HandFit:
    """``joints_cam_m`` (21, 3) refitted so that ``joint`` projects onto ``uv_px`` with
    plausible bone lengths (see the module docstring)."""
    joints = np.asarray(joints_cam_m, dtype=np.float64).reshape(21, 3)
    if not 0 <= joint < 21:
        raise ValueError(f"joint must be 0..20, got {joint}")
    if not np.isfinite(joints).all() or joints[:, 2].min() <= 0:
        raise ValueError(f"{side} hand: joints must be finite and in front of the camera")
    landmarks = camera.project(joints)
    landmarks[joint] = np.asarray(uv_px, dtype=np.float64).reshape(2)
    pinned = np.zeros(21, dtype=bool)
    pinned[joint] = True
    observation = HandObservation(side, landmarks, joints - joints.mean(axis=0), pinned=pinned,
                                  depth_prior_m=float(joints[0, 2]))
    return fit_hand(observation, camera, options or EDIT_OPTIONS)
