"""The skeleton fit for editing (core/detect/edit_fit.py): a hand in a box and a 2D joint drag
keep bone lengths plausible."""

import time

import numpy as np
import pytest

from core.detect import hand_prior as HP
from core.detect import skeleton_model as M
from core.detect.edit_fit import hand_after_2d_drag, hand_in_box
from core.synth import pose_sampler as PS
from core.types import Camera

CAMERA = Camera(K=np.array([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]]), width=640, height=480)
# Per-bone log SDs of the prior (skeleton_fit uses the same table)
_MAX_BONE_LOG = 3 * HP.THUMB_BASE_LOG_SD


def _skeleton_hand(side: str, seed: int) -> np.ndarray:
    """A hand of the skeleton model, palm to the camera, 0.5 m away, in a sampled pose."""
    rng = np.random.default_rng(seed)
    p = np.zeros(M.NUM_PARAMS)
    p[M.SCALE] = 0.05
    p[M.BONES] = rng.normal(scale=0.03, size=M.NUM_BONES)
    p[M.ANGLES] = PS.sample_pose(rng, "relaxed").angles.ravel()
    p[M.ROT] = (np.pi, 0.0, 0.0)  # fingers up in the image, palm to the camera
    p[3:6] = (0.0, 0.05, np.log(0.5))
    return M.camera_joints(p, side)[0]


@pytest.mark.parametrize("side, joint", [("right", 8), ("left", 16), ("right", 0)])
def test_a_2d_drag_lands_the_joint_and_keeps_bones_plausible(side, joint):
    hand = _skeleton_hand(side, seed=joint)
    uv0 = CAMERA.project(hand)
    target = uv0[joint] + np.array([14.0, -9.0])
    start = time.process_time()
    fit = hand_after_2d_drag(side, hand, CAMERA, joint, target)
    cpu_ms = (time.process_time() - start) * 1000
    uv = CAMERA.project(fit.joints_m)
    assert np.linalg.norm(uv[joint] - target) < 1.0
    assert np.abs(fit.params[M.BONES]).max() < _MAX_BONE_LOG  # proportions within the prior
    # the size follows the 2D at the kept depth (dragging the wrist 9 px up shortens the hand)
    assert fit.hand_length_m == pytest.approx(HP.HAND_LENGTH_MEAN_M * np.exp(0.05), rel=0.1)
    assert fit.joints_m[0, 2] == pytest.approx(hand[0, 2], rel=0.03)  # the hand stays at its depth
    finger = set(range(joint - (joint - 1) % 4, joint - (joint - 1) % 4 + 4)) if joint else set()
    others = [j for j in range(21) if j not in finger and j != joint]
    assert np.linalg.norm(uv[others] - uv0[others], axis=1).mean() < 4.0  # the rest barely moves
    assert cpu_ms < 100


def test_a_hand_in_a_box_has_the_prior_size_and_fills_the_box():
    box = (200.0, 100.0, 330.0, 300.0)
    fit = hand_in_box("left", CAMERA, box)
    uv = CAMERA.project(fit.joints_m)
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    assert np.all(lo > np.array(box[:2]) - 2) and np.all(hi < np.array(box[2:]) + 2)
    assert np.max((hi - lo) / (np.array(box[2:]) - box[:2])) > 0.98  # touches the tighter side
    assert fit.hand_length_m == pytest.approx(HP.HAND_LENGTH_MEAN_M, rel=0.03)
    assert np.abs(fit.params[M.BONES]).max() < 2 * HP.THUMB_BASE_LOG_SD  # within 2 SD of the prior
    assert np.abs(fit.params[M.BONES]).mean() < HP.METACARPAL_LOG_SD
    # the depth at which a hand of the prior's size has this image: ~f * length / box height
    assert fit.joints_m[0, 2] == pytest.approx(600 * HP.HAND_LENGTH_MEAN_M / 200, rel=0.2)


def test_edit_fits_reject_bad_input():
    hand = _skeleton_hand("right", seed=1)
    with pytest.raises(ValueError, match="joint must be"):
        hand_after_2d_drag("right", hand, CAMERA, 21, (0, 0))
    behind = hand.copy()
    behind[:, 2] = -0.5
    with pytest.raises(ValueError, match="in front of the camera"):
        hand_after_2d_drag("right", behind, CAMERA, 3, (0, 0))
    with pytest.raises(ValueError, match="x1 > x0"):
        hand_in_box("right", CAMERA, (10, 10, 5, 50))
